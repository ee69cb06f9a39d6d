"""The Encoder: a pretrained backbone, per-side delimiters, pooling and normalisation."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cpt_embed.atomic import atomic_dir
from cpt_embed.errors import InputError, first_line
from cpt_embed.model.attention import RAGGED
from cpt_embed.model.config import (
    CONFIG_NAME,
    NO_DELIMITERS,
    PAPER_DELIMITERS,
    EncoderConfig,
    Side,
)
from cpt_embed.model.inference import InferenceCompiler, InferenceCopy, is_packed
from cpt_embed.model.pooling import pool
from cpt_embed.model.resolve import DEFAULT_MODEL, DEFAULT_MODEL_ID, resolve_model
from cpt_embed.model.st_format import (
    is_sentence_transformers_folder,
    read_sentence_transformers,
    sentence_transformers_problem,
    write_sentence_transformers,
)
from cpt_embed.model.tokenize import DelimitedTokenizer

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_DEFAULT_MAX_LENGTH = 512
# Padded tokens per forward pass on CPU: bigger batches spill the attention blocks out of
# cache and run slower (docs/benchmarks.md).
CPU_BATCH_TOKENS = 4096
# A batch runs as a ragged row (no padding in the linear layers) where padding would be at
# least this share of its tokens: below it, re-padding for attention costs what it saves
# (sorted batches of long texts: 0.95-1.0x ragged; 64 unsorted sentences: 1.25-1.4x).
RAGGED_FROM_PADDING = 0.1


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


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None
) -> list[list[int]]:
    """Indices grouped longest first into batches of at most `batch_size` texts and at most
    `max_tokens` padded tokens (a text longer than that goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            last = batches[-1]
            width = lengths[last[0]]
            if len(last) < batch_size and (
                max_tokens is None or (len(last) + 1) * width <= max_tokens
            ):
                last.append(i)
                continue
        batches.append([i])
    return batches


def _padding_share(sequences: list[list[int]]) -> float:
    """Share of a padded batch's tokens that would be padding."""
    padded = len(sequences) * max(len(s) for s in sequences)
    return 1 - sum(len(s) for s in sequences) / padded


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_causal_lm(backbone_config) -> bool:
    """True for decoder-only language models (GPT, Llama, ...), which get the paper's recipe."""
    archs = getattr(backbone_config, "architectures", None) or []
    return bool(getattr(backbone_config, "is_decoder", False)) or any(
        a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs
    )


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one str; wrap it: [text]")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return texts


class Encoder(nn.Module):
    """Embeds text and code: `[SOS] x [EOS]` through a Transformer, pooled and normalised.

    Load with `Encoder.load("default" | folder | hub id)`; embed with `encode`. `forward`
    takes a batch from `tokenize` and keeps the graph, for training.
    """

    def __init__(self, backbone: nn.Module, tokenizer, config: EncoderConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        self._tokens = DelimitedTokenizer(tokenizer, config)
        params = inspect.signature(backbone.forward).parameters
        embeddings = getattr(backbone, "embeddings", None)
        # Positions must follow the real tokens under left padding, unless the model already
        # derives them from the input ids (RoBERTa-style embeddings have a padding_idx).
        self._explicit_positions = (
            config.padding_side == "left"
            and "position_ids" in params
            and not hasattr(embeddings, "padding_idx")
        )
        self._no_cache = "use_cache" in params
        self._inference = InferenceCopy()
        self._compiler = InferenceCompiler()

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def load(
        cls,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        trust_pickle: bool | None = None,
        **overrides: Any,
    ) -> Encoder:
        """Load an Encoder from `default`, a folder (cpt, sentence-transformers or plain
        Hugging Face) or a hub id. `overrides` replace EncoderConfig fields, e.g. pooling.

        Weights are read from safetensors only: a folder with nothing but pickled weights
        (pytorch_model.bin ...) is refused, since unpickling can run code, unless
        `trust_pickle` (default: $CPT_TRUST_PICKLE=1, set by `cpt --trust-pickle`).
        """
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = resolve_model(model)
        if not folder.is_dir():
            raise InputError(f"model {os.fspath(model)!r}: expected a folder, got a file")
        with _unreadable(folder, "its config.json"):
            backbone_config = AutoConfig.from_pretrained(folder)
        base_model = DEFAULT_MODEL_ID if os.fspath(model) == DEFAULT_MODEL else os.fspath(model)
        if (folder / CONFIG_NAME).is_file():
            backbone_dir, config = folder, EncoderConfig.load(folder)
        elif is_sentence_transformers_folder(folder):
            backbone_dir, config = read_sentence_transformers(folder)
            config.base_model = base_model
        else:
            backbone_dir = folder
            causal = is_causal_lm(backbone_config)
            config = EncoderConfig(
                pooling="eos" if causal else "mean",
                delimiters=dict(PAPER_DELIMITERS if causal else NO_DELIMITERS),
                base_model=base_model,
            )
        if trust_pickle is None:
            trust_pickle = os.environ.get(TRUST_PICKLE_ENV) == "1"
        use_safetensors = _use_safetensors(backbone_dir, trust_pickle)
        with _unreadable(backbone_dir, "its tokenizer files"):
            tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # causal LMs ship without one
        if not (folder / CONFIG_NAME).is_file():
            config.max_length = min(config.max_length, _model_limit(tokenizer, backbone_config))
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise TypeError(f"unknown Encoder setting {key!r}")
            setattr(config, key, value)
        config = EncoderConfig.from_dict(config.to_dict())  # re-validate the overrides
        with _unreadable(backbone_dir, "its weights"), _quiet_transformers():
            backbone = AutoModel.from_pretrained(backbone_dir, use_safetensors=use_safetensors)
        rows = backbone.get_input_embeddings().num_embeddings
        if len(tokenizer) > rows:
            raise InputError(
                f"{backbone_dir}: the tokenizer has {len(tokenizer)} tokens but the model "
                f"embeds only {rows}; the tokenizer files belong to another model"
            )
        encoder = cls(backbone, tokenizer, config)
        return encoder.to(device or default_device()).eval()

    def save(self, path: str | os.PathLike, *, sentence_transformers: bool | None = None) -> Path:
        """Write the model folder atomically: backbone (safetensors), tokenizer, cpt_config.json.

        The folder is also a sentence-transformers model when that format can express the
        config exactly (`sentence_transformers=None`); `True` demands it, `False` skips it.
        """
        problem = sentence_transformers_problem(self.config)
        if sentence_transformers and problem:
            raise InputError(f"cannot export as sentence-transformers: {problem}")
        path = Path(path)
        with atomic_dir(path) as tmp, _quiet_transformers():
            self.backbone.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            self.config.save(tmp)
            if sentence_transformers is not False and problem is None:
                write_sentence_transformers(tmp, self.config, self.dim)
        return path

    # ---------------------------------------------------------------- computing
    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.backbone.config.hidden_size)

    @property
    def device(self) -> torch.device:
        """Device of the backbone's weights."""
        return next(self.backbone.parameters()).device

    def tokenize(self, texts: Sequence[str], side: Side = "query") -> dict[str, torch.Tensor]:
        """A padded batch for `forward`, on the model's device."""
        sequences = self._tokens.encode(_check_texts(texts), side)
        return self._to_device(self._tokens.pad(sequences, side))

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.device
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings (batch, dim) of a batch from `tokenize`, normalised if configured."""
        return self._embed(batch, self.backbone)

    def _embed(self, batch: dict[str, Any], backbone: nn.Module) -> torch.Tensor:
        mask = batch["attention_mask"]
        ragged = batch.get("ragged")
        inputs = {"input_ids": batch["input_ids"]}
        if ragged is not None:  # from DelimitedTokenizer.ragged
            inputs |= {"position_ids": batch["position_ids"], RAGGED: ragged}
        else:
            inputs["attention_mask"] = mask
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        if self._explicit_positions and ragged is None:
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        if self._no_cache:
            inputs["use_cache"] = False
        hidden = backbone(**inputs).last_hidden_state
        hidden = (hidden[0][ragged.index] if ragged is not None else hidden).float()
        vectors = pool(hidden, mask, batch["pool_index"], batch["first_index"], self.config.pooling)
        return F.normalize(vectors, dim=-1) if self.config.normalize else vectors

    def encode(
        self,
        texts: Sequence[str],
        side: Side = "query",
        *,
        batch_size: int = 128,
        max_batch_tokens: int | None = None,
        dtype: str | torch.dtype | None = "auto",
        compile: bool = False,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embed `texts` as float32 numpy (n, dim); row i belongs to texts[i].

        Queries (and symmetric tasks) use `side="query"`, documents to be searched
        `side="document"`. Texts are sorted by length and batched by at most `batch_size`
        texts and `max_batch_tokens` padded tokens (default: 4096 on CPU, no limit
        elsewhere); in float32 the result does not depend on order or batch size.
        `dtype="auto"` computes in bfloat16 where the hardware does so natively, on a copy
        of the weights cast once and kept until they change (half the float32 weights' size).
        `compile=True` runs a torch.compile'd copy with frozen weights: worth its start-up
        (about 30 s) for tens of thousands of texts on GPUs or in float32; on CPU in
        bfloat16 the eager copy with pre-packed weights is faster and runs instead. It falls
        back to eager mode where compiling fails. Empty strings embed their delimiters
        alone; long texts are truncated to max_length, always keeping the closing delimiter.
        """
        texts = _check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        device = self.device
        compute = to_dtype(dtype, device)
        if max_batch_tokens is None and device.type == "cpu":
            max_batch_tokens = CPU_BATCH_TOKENS
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        sequences = self._tokens.encode(texts, side)
        batches = length_batches([len(s) for s in sequences], batch_size, max_batch_tokens)
        # once per call: checking the weights for changes is not per-batch work
        backbone = self._inference.backbone(self.backbone, compute)
        # a pre-packed CPU copy runs faster in eager mode than compiled (docs/benchmarks.md)
        compiled = self._compiler.module(backbone) if compile and not is_packed(backbone) else None
        ragged = compiled is None and self._inference.ragged(backbone)
        # the copy is always in eval mode; switching the backbone's ~100 modules costs 0.5 ms
        switch = backbone is self.backbone and any(m.training for m in self.modules())
        was_training = self.training
        if switch:
            self.eval()
        try:
            with (
                torch.inference_mode(),
                tqdm(
                    total=len(texts), disable=not show_progress, unit="text", desc="embedding"
                ) as bar,
            ):
                for rows in batches:
                    chosen = [sequences[i] for i in rows]
                    if ragged and _padding_share(chosen) >= RAGGED_FROM_PADDING:
                        batch = self._tokens.ragged(chosen, side)
                    else:
                        batch = self._to_device(self._tokens.pad(chosen, side))
                    vectors = self._encode_batch(batch, backbone, compiled)
                    out[rows] = vectors.float().cpu().numpy()
                    bar.update(len(rows))
        finally:
            if switch:
                self.train(was_training)
        return out

    def _encode_batch(
        self, batch: dict[str, torch.Tensor], backbone: nn.Module, compiled: nn.Module | None
    ) -> torch.Tensor:
        if compiled is None:
            return self._embed(batch, backbone)
        rows = len(batch["input_ids"])
        if rows == 1:  # a batch of one would cost a second compilation (size 1 is special)
            batch = {k: v.expand(2, *v.shape[1:]) for k, v in batch.items()}
        return self._compiler.run(
            lambda: self._embed(batch, compiled)[:rows],
            lambda: self._embed(batch, backbone)[:rows],
        )


@contextlib.contextmanager
def _quiet_transformers():
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


def _model_limit(tokenizer, backbone_config) -> int:
    """The longest input the model was built for, capped at 512 tokens by default."""
    limits = [_DEFAULT_MAX_LENGTH]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(backbone_config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    return min(limits)


TRUST_PICKLE_ENV = "CPT_TRUST_PICKLE"
_PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _use_safetensors(folder: Path, trust_pickle: bool) -> bool:
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


@contextlib.contextmanager
def _unreadable(folder: Path, what: str):
    """Turn a failure to parse a model's files into one line naming the folder."""
    try:
        yield
    except Exception as err:  # transformers, tokenizers and safetensors raise many kinds
        raise InputError(
            f"{folder}: cannot read {what} ({first_line(err)[:200]}); re-save or reinstall "
            "the model"
        ) from err
