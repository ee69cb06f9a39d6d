"""Compute dtypes and devices: which precision a device runs natively, names for dtypes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from cpt_embed.errors import InputError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 matrix products run in hardware: CPUs with AVX-512 BF16 or AMX,
    CUDA GPUs from Ampere on."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def to_dtype(dtype: str | torch.dtype | None, device: torch.device | None = None) -> torch.dtype:
    """torch dtype from a name such as `bf16`; None means float32, `auto` means bfloat16 where
    `device` computes it natively (about 2.5x faster on such CPUs, cosine >= 0.9999 to
    float32), else float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower()
    if name == "auto":
        native = device is not None and native_bf16(device)
        return torch.bfloat16 if native else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        choices = sorted([*_DTYPES, "auto"])
        raise InputError(f"dtype {dtype!r} is not one of {choices}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """`float32`, `bfloat16` or `float16`: the name reports and cache keys use."""
    return str(dtype).removeprefix("torch.")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of a batch moved to `device` (asynchronously where the device allows)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads (process-wide) set to `count` meanwhile; None leaves them be."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
