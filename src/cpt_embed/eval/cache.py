"""On-disk cache of embeddings keyed by the model's exact weights and settings and the texts.

Re-running an evaluation re-embeds nothing; each entry is written atomically, so Ctrl-C
leaves only whole entries.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from cpt_embed.atomic import atomic_file
from cpt_embed.model import Encoder

CACHE_ENV = "CPT_CACHE"
# Settings that change no embedding.
_IRRELEVANT = ("logit_scale", "base_model", "training", "padding_side")


def default_cache_dir() -> Path:
    """$CPT_CACHE/embeddings, else ~/.cache/cpt-embed/embeddings."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cpt-embed"
    return Path(root) / "embeddings"


def model_fingerprint(encoder: Encoder) -> str:
    """sha256 over the settings that shape embeddings, the tokenizer and every weight."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in encoder.config.to_dict().items() if k not in _IRRELEVANT}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(encoder.tokenizer)).encode())
    for name, tensor in sorted(encoder.backbone.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def texts_fingerprint(texts: list[str]) -> str:
    """sha256 of the texts in order."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


class CachedEncoder:
    """`encode` through a cache folder (None: no cache)."""

    def __init__(
        self,
        encoder: Encoder,
        cache_dir: Path | None,
        *,
        batch_size: int = 64,
        dtype: str = "float32",
        show_progress: bool = True,
    ) -> None:
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.dtype = dtype
        self.show_progress = show_progress
        self.fingerprint = model_fingerprint(encoder) if cache_dir is not None else None
        self.hits = 0
        self.misses = 0

    def encode(self, texts: list[str], side: str) -> np.ndarray:
        """Embeddings of `texts` on `side`, from the cache when present."""
        path = None
        if self.cache_dir is not None:
            key = hashlib.sha256(
                f"{self.fingerprint}|{side}|{self.dtype}|{texts_fingerprint(texts)}".encode()
            ).hexdigest()
            path = self.cache_dir / key[:2] / f"{key}.npy"
            if path.is_file():
                try:
                    vectors = np.load(path, allow_pickle=False)
                    if vectors.shape == (len(texts), self.encoder.dim):
                        self.hits += 1
                        return vectors
                except (OSError, ValueError):
                    pass  # a damaged entry is recomputed and overwritten
        vectors = self.encoder.encode(
            texts,
            side=side,
            batch_size=self.batch_size,
            dtype=self.dtype,
            show_progress=self.show_progress,
        )
        self.misses += 1
        if path is not None:
            with atomic_file(path) as handle:
                np.save(handle, vectors)
        return vectors
