"""The Encoder: a pretrained backbone, per-side delimiters, pooling and normalisation.

Reading a model folder is in loading.py; `encode` hands its batches to the fast
inference runtime in runtime/.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.atomic import atomic_dir
from cpt_embed.errors import InputError, unreadable
from cpt_embed.model.config import (
    CONFIG_NAME,
    NO_DELIMITERS,
    PAPER_DELIMITERS,
    EncoderConfig,
    Side,
)
from cpt_embed.model.explain import DEFAULT_STEPS, Explanation, explain_pair
from cpt_embed.model.lazy import Deferred, LazyModules
from cpt_embed.model.loading import (
    TRUST_PICKLE_ENV,
    check_vocabulary,
    cpu_copy,
    is_causal_lm,
    model_limit,
    quiet_transformers,
    read_backbone,
    read_tokenizer,
    use_safetensors,
)
from cpt_embed.model.pooling import pool, pool_row
from cpt_embed.model.resolve import DEFAULT_MODEL, DEFAULT_MODEL_ID, resolve_model
from cpt_embed.model.runtime.attention import RAGGED
from cpt_embed.model.runtime.batching import InferenceRuntime
from cpt_embed.model.runtime.copy import remember_weights
from cpt_embed.model.runtime.devices import default_device, to_device, to_dtype
from cpt_embed.model.runtime.imports import import_models
from cpt_embed.model.runtime.threads import GOVERNOR
from cpt_embed.model.st_format import (
    is_sentence_transformers_folder,
    read_sentence_transformers,
    sentence_transformers_problem,
    write_sentence_transformers,
)
from cpt_embed.model.tokenize import DelimitedTokenizer


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
    takes a batch from `tokenize` (or `tokens.pad` / `tokens.ragged` of token ids from
    `tokens.encode`) and keeps the graph, for training.
    """

    def __init__(self, backbone: nn.Module | Deferred, tokenizer, config: EncoderConfig) -> None:
        super().__init__()
        if isinstance(backbone, Deferred):  # loaded on first use (lazy.py)
            self._modules = LazyModules(backbone)
            shape = backbone.fast
        else:
            self.backbone = shape = backbone
        self.tokenizer = tokenizer
        self.config = config
        self.tokens = DelimitedTokenizer(tokenizer, config)
        # the deferred copy is called as the backbone is, so both answer these alike
        params = inspect.signature(shape.forward).parameters
        embeddings = getattr(shape, "embeddings", None)
        # Positions must follow the real tokens under left padding, unless the model already
        # derives them from the input ids (RoBERTa-style embeddings have a padding_idx).
        self._explicit_positions = (
            config.padding_side == "left"
            and "position_ids" in params
            and not hasattr(embeddings, "padding_idx")
        )
        self._no_cache = "use_cache" in params
        self._runtime = InferenceRuntime()

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
        folder = resolve_model(model)
        if not folder.is_dir():
            raise InputError(f"model {os.fspath(model)!r}: expected a folder, got a file")
        import_models()
        from transformers import AutoConfig

        with unreadable(folder, "its config.json"):
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
        safetensors = use_safetensors(backbone_dir, trust_pickle)
        tokenizer = read_tokenizer(backbone_dir)
        if not (folder / CONFIG_NAME).is_file():
            config.max_length = min(config.max_length, model_limit(tokenizer, backbone_config))
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise TypeError(f"unknown Encoder setting {key!r}")
            setattr(config, key, value)
        config = EncoderConfig.from_dict(config.to_dict())  # re-validate the overrides

        def backbone() -> nn.Module:
            # remembered before any move to a GPU: the files matter only to CPU copies'
            # probes, and moving to the CPU it is on leaves the weights where they are
            loaded = read_backbone(backbone_dir, tokenizer, safetensors)
            if safetensors:
                remember_weights(loaded, backbone_dir.glob("*.safetensors"))
            return loaded

        fast = cpu_copy(backbone_dir, device) if safetensors else None
        if fast is not None:
            check_vocabulary(backbone_dir, tokenizer, fast.vocab_size)
            encoder = cls(Deferred(backbone, fast), tokenizer, config)
            encoder.training = False
        else:
            encoder = cls(backbone(), tokenizer, config).to(device or default_device()).eval()
        if encoder.device.type == "cpu":  # a window of other processes' load by the first batch
            GOVERNOR.start_sampling()
        return encoder

    def save(self, path: str | os.PathLike, *, sentence_transformers: bool | None = None) -> Path:
        """Write the model folder atomically: backbone (safetensors), tokenizer, cpt_config.json.

        The folder is also a sentence-transformers model when that format can express the
        config exactly (`sentence_transformers=None`); `True` demands it, `False` skips it.
        """
        problem = sentence_transformers_problem(self.config)
        if sentence_transformers and problem:
            raise InputError(f"cannot export as sentence-transformers: {problem}")
        path = Path(path)
        with atomic_dir(path) as tmp, quiet_transformers():
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
        fast = self._fast()
        if fast is not None:
            return int(fast.hidden_size)
        return int(self.backbone.config.hidden_size)

    @property
    def device(self) -> torch.device:
        """Device of the backbone's weights."""
        if self._fast() is not None:
            return torch.device("cpu")
        return next(self.backbone.parameters()).device

    def _fast(self) -> nn.Module | None:
        """The CPU copy Encoder.load made without loading the backbone, until it loads."""
        modules = self._modules
        return modules.fast if isinstance(modules, LazyModules) else None

    def tokenize(self, texts: Sequence[str], side: Side = "query") -> dict[str, torch.Tensor]:
        """A padded batch for `forward`, on the model's device."""
        sequences = self.tokens.encode(_check_texts(texts), side)
        return to_device(self.tokens.pad(sequences, side), self.device)

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
        hidden = backbone(**inputs).last_hidden_state.float()
        where = (batch["pool_index"], batch["first_index"], self.config.pooling)
        if ragged is not None:
            vectors = pool_row(hidden[0], ragged, *where)
        else:
            vectors = pool(hidden, mask, *where)
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
        compute = to_dtype(dtype, self.device)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        sequences = self.tokens.encode(texts, side)
        return self._encode_sequences(
            sequences,
            side,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            dtype=compute,
            compile=compile,
            show_progress=show_progress,
        )

    def _encode_sequences(
        self, sequences: list[list[int]], side: Side, *, dtype: torch.dtype, **settings: Any
    ) -> np.ndarray:
        """`encode` of token sequences from `tokens.encode` (serve/embedding.py sends ids):
        on the copy Encoder.load made where it computes `dtype`, else on the backbone's."""
        fast = self._fast()
        prepared = fast is not None and fast.dtype == dtype
        return self._runtime.encode(
            self,
            fast if prepared else self.backbone,
            self._embed,
            self.tokens,
            sequences,
            side,
            dim=self.dim,
            dtype=dtype,
            prepared=prepared,
            **settings,
        )

    def explain(
        self,
        query: str,
        document: str,
        *,
        document_side: Side = "document",
        layer: int | None = None,
        steps: int = DEFAULT_STEPS,
        lines: bool | None = None,
        dtype: str | torch.dtype | None = "auto",
    ) -> Explanation:
        """Why `query` and `document` match: their cosine similarity and each token's share
        of it on both sides, and each source line's where a side is code (`lines=None`: a
        side with a newline; True or False: both sides). The tokens are those the model
        embeds; special tokens and delimiters score 0.

        Each side's scores are layer integrated gradients of the cosine, the other side's
        vector held fixed: at the hidden states of layer `layer` (0: the token embeddings;
        default: two thirds of the way up), along the straight path from a baseline in
        which each text token's state is the mean of them all, by `steps` Gauss-Legendre
        points in one batch. They sum to `similarity - side.baseline` within the
        quadrature's error (about 3% at 4 steps). `document_side="query"` embeds the
        document as a query (symmetric tasks such as STS). `dtype="auto"` computes in
        bfloat16 (autocast) where the hardware does so natively, as `encode` does, else
        float32. Runs in eval mode (the mode is restored after); docs/explain.md.
        """
        return explain_pair(
            self,
            query,
            document,
            document_side=document_side,
            layer=layer,
            steps=steps,
            lines=lines,
            dtype=dtype,
        )
