"""Reading a model folder's tokenizer and backbone for `Encoder.load`: safetensors only
unless pickles are trusted, one-line errors naming the folder, the model's length limit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cpt_embed.errors import InputError, unreadable

if TYPE_CHECKING:
    import torch
    from torch import nn

# Set to 1 (by `cpt --trust-pickle`) to let `Encoder.load` read pickled weights.
TRUST_PICKLE_ENV = "CPT_TRUST_PICKLE"
_PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_DEFAULT_MAX_LENGTH = 512


def is_causal_lm(backbone_config) -> bool:
    """True for decoder-only language models (GPT, Llama, ...), which get the paper's recipe."""
    archs = getattr(backbone_config, "architectures", None) or []
    return bool(getattr(backbone_config, "is_decoder", False)) or any(
        a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs
    )


def model_limit(tokenizer, backbone_config) -> int:
    """The longest input the model was built for, capped at 512 tokens by default."""
    limits = [_DEFAULT_MAX_LENGTH]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(backbone_config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    return min(limits)


def use_safetensors(folder: Path, trust_pickle: bool) -> bool:
    """True when the folder has safetensors weights; False only for pickled weights that the
    user trusts; otherwise a clear refusal."""
    if any(folder.glob("*.safetensors")):
        return True
    pickled = sorted(p.name for pattern in _PICKLED for p in folder.glob(pattern))
    if not pickled:
        raise InputError(f"{folder}: no .safetensors weights; save the model with safetensors")
    if not trust_pickle:
        raise InputError(
            f"{folder}: the weights are pickled ({', '.join(pickled)}) and loading a pickle can "
            "run code; convert them to safetensors, or pass --trust-pickle if you trust the file"
        )
    return False


def read_tokenizer(folder: Path):
    """The folder's tokenizer, padding with its end token where it has no pad token."""
    from transformers import AutoTokenizer

    with unreadable(folder, "its tokenizer files"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # causal LMs ship without one
    return tokenizer


def read_backbone(folder: Path, tokenizer, safetensors: bool) -> nn.Module:
    """The folder's Transformer without any task head, checked to embed every token of
    `tokenizer`."""
    from cpt_embed.model.runtime.imports import import_modeling

    import_modeling()
    from transformers import AutoModel

    with unreadable(folder, "its weights"), quiet_transformers():
        backbone = AutoModel.from_pretrained(folder, use_safetensors=safetensors)
    check_vocabulary(folder, tokenizer, backbone.get_input_embeddings().num_embeddings)
    return backbone


def check_vocabulary(folder: Path, tokenizer, rows: int) -> None:
    """Refuse a model whose embeddings have fewer rows than its tokenizer has tokens."""
    if len(tokenizer) > rows:
        raise InputError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model "
            f"embeds only {rows}; the tokenizer files belong to another model"
        )


def cpu_copy(folder: Path, device: str | torch.device | None) -> nn.Module | None:
    """`encode`'s bfloat16 copy of the folder's model made from its weights file alone, where
    the model runs on this CPU in bfloat16 and is a BERT that runtime/bert.py computes (the
    backbone then loads on first use, lazy.py); else None."""
    import torch

    from cpt_embed.model.runtime.bert import CpuBert
    from cpt_embed.model.runtime.devices import default_device, to_dtype

    target = torch.device(device) if device is not None else default_device()
    if target.type != "cpu" or to_dtype("auto", target) != torch.bfloat16:
        return None
    return CpuBert.load(folder, torch.bfloat16)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-tensor loading and saving bars and its report of the LM head
    left out when a causal LM loads as a bare backbone: expected here, alarming to read."""
    from transformers.utils import logging

    level, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bar:
            logging.enable_progress_bar()
