"""Querying an index folder: the k chunks nearest a query, optionally of one language or
under a path glob, as hits, and the hits' plain form for `cpt search --json` and the HTTP
API."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cpt_embed.errors import InputError
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.search.index import nearest, read_faiss_index
from cpt_embed.search.store import (
    FAISS_INDEX,
    VECTORS,
    check_model,
    chunk_rows,
    open_metadata,
    read_chunk,
    read_manifest,
)

if TYPE_CHECKING:  # torch loads with the model, after the inputs are checked
    from cpt_embed.model import Encoder

# what `--lang` also takes for a language: the usual file extension
_LANGUAGE_ALIASES = {
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
    "rb": "ruby",
    "rs": "rust",
    "md": "markdown",
    "txt": "text",
}


@dataclass
class Hit:
    """One search result."""

    score: float
    path: str
    language: str
    start_line: int
    end_line: int
    name: str
    text: str


def hits_to_dicts(hits: Iterable[Hit]) -> list[dict[str, Any]]:
    """Hits as plain dicts (for --json and the HTTP API): one key per field of Hit."""
    return [asdict(hit) for hit in hits]


class Searcher:
    """Queries one index folder with its model."""

    def __init__(self, index: Path, encoder: Encoder, model_name: str) -> None:
        self.path = Path(index)
        self.manifest = read_manifest(self.path)
        check_model(self.manifest, model_fingerprint(encoder), model_name)
        self.encoder = encoder
        self.faiss = read_faiss_index(self.path / FAISS_INDEX)
        self.vectors = np.load(self.path / VECTORS, mmap_mode="r")
        self.db = open_metadata(self.path)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        language: str | None = None,
        path_glob: str | None = None,
    ) -> list[Hit]:
        """The k chunks most similar to `query`, optionally only of one language and/or
        paths matching a glob (filtered searches are exact over the matching chunks)."""
        vector = self.encoder.encode([query], side="query")[0]
        return self.search_vector(vector, k, language=language, path_glob=path_glob)

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        *,
        language: str | None = None,
        path_glob: str | None = None,
    ) -> list[Hit]:
        """`search` for a query already embedded (query side, this index's model)."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if language or path_glob:
            rows = self._filtered(language, path_glob)
            if not rows:
                return []
            scores = np.asarray(self.vectors[rows]) @ vector[0]
            top = np.argsort(-scores, kind="stable")[:k]
            pairs = [(float(scores[i]), rows[i]) for i in top]
        else:
            scores, ids = nearest(
                self.faiss, self.vectors, vector, min(k, max(1, self.faiss.ntotal))
            )
            pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        return [self._hit(score, row) for score, row in pairs]

    def _filtered(self, language: str | None, path_glob: str | None) -> list[int]:
        """The rows of the chunks of `language` (or an alias of it) whose path matches
        `path_glob` anywhere below the index's roots."""
        language = _LANGUAGE_ALIASES.get(language, language) if language else None
        rows = chunk_rows(self.db, language)
        if path_glob:
            rows = [
                (row, path)
                for row, path in rows
                if fnmatch.fnmatch(path, path_glob) or fnmatch.fnmatch(path, f"*/{path_glob}")
            ]
        return [row for row, _ in rows]

    def _hit(self, score: float, row: int) -> Hit:
        chunk = read_chunk(self.db, row)
        return Hit(
            score,
            chunk.path,
            chunk.language,
            chunk.start_line,
            chunk.end_line,
            chunk.name,
            chunk.text,
        )
