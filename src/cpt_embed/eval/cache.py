"""On-disk cache of embeddings keyed by the model's exact weights and settings and the texts.

Re-running an evaluation re-embeds nothing; each entry is written atomically, so Ctrl-C
leaves only whole entries.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cpt_embed.atomic import atomic_file
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.paths import cache_root

if TYPE_CHECKING:
    from cpt_embed.model import Encoder


def default_cache_dir() -> Path:
    """$CPT_CACHE/embeddings, else ~/.cache/cpt-embed/embeddings."""
    return cache_root() / "embeddings"


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
        batch_size: int = 128,
        dtype: str = "float32",
        compile: bool = False,
        show_progress: bool = True,
    ) -> None:
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.dtype = dtype
        self.compile = compile
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
            compile=self.compile,
            show_progress=self.show_progress,
        )
        self.misses += 1
        if path is not None:
            with atomic_file(path) as handle:
                np.save(handle, vectors)
        return vectors
