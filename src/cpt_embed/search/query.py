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
from cpt_embed.model import fusion
from cpt_embed.model.fingerprint import model_fingerprint
from cpt_embed.search.index import nearest, read_faiss_index
from cpt_embed.search.lexical import read_lexical
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
    from cpt_embed.search.explain import HitExplanation

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


def hits_to_dicts(
    hits: Iterable[Hit], explanations: list[HitExplanation] | None = None
) -> list[dict[str, Any]]:
    """Hits as plain dicts (for --json and the HTTP API): one key per field of Hit, and
    `explanation` (HitExplanation.to_dict) on the first hits, one per explanation given."""
    out = [asdict(hit) for hit in hits]
    for hit, explanation in zip(out, explanations or [], strict=False):
        hit["explanation"] = explanation.to_dict()
    return out


MODES = ("hybrid", "dense", "lexical")


def best_positions(values: np.ndarray, k: int) -> np.ndarray:
    """The positions of the k largest `values`, best first, ties in position order: what
    `np.argsort(-values, kind="stable")[:k]` gives, without sorting a million values (one
    partition, then a sort of k)."""
    if k >= len(values):
        return np.argsort(-values, kind="stable")
    kth = np.partition(values, len(values) - k)[len(values) - k]
    above = np.flatnonzero(values > kth)
    picked = np.concatenate([above, np.flatnonzero(values == kth)[: k - len(above)]])
    return picked[np.argsort(-values[picked], kind="stable")]


class Searcher:
    """Queries one index folder with its model: dense (vectors), lexical (BM25 over the
    same chunks) or hybrid (both, fused; the default where the index has both)."""

    def __init__(self, index: Path, encoder: Encoder, model_name: str) -> None:
        self.path = Path(index)
        self.manifest = read_manifest(self.path)
        check_model(self.manifest, model_fingerprint(encoder), model_name)
        self.encoder = encoder
        self.precision = self.manifest.get("precision", "float32")  # older: float32
        self.faiss = read_faiss_index(self.path / FAISS_INDEX, self.precision)
        self.vectors = np.load(self.path / VECTORS, mmap_mode="r")
        self.db = open_metadata(self.path)
        self.lexical = read_lexical(self.path)

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes this index answers, its default first."""
        return MODES if self.lexical is not None else ("dense",)

    def check_mode(self, mode: str | None) -> str:
        """`mode`, or the index's default for None; one line for a mode it cannot answer."""
        if mode is None:
            return self.modes[0]
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode not in self.modes:
            raise InputError(
                f"{self.path}: no lexical index (built with --no-lexical, or from embeddings, "
                f"or before hybrid search); rebuild it with cpt index build, or use --mode dense"
            )
        return mode

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        language: str | None = None,
        path_glob: str | None = None,
        mode: str | None = None,
    ) -> list[Hit]:
        """The k chunks that best match `query`, optionally only of one language and/or
        paths matching a glob (filtered searches are exact over the matching chunks)."""
        mode = self.check_mode(mode)
        vector = None if mode == "lexical" else self.encoder.encode([query], side="query")[0]
        return self.search_vector(
            vector, k, language=language, path_glob=path_glob, text=query, mode=mode
        )

    def search_vector(
        self,
        vector: np.ndarray | None,
        k: int = 10,
        *,
        language: str | None = None,
        path_glob: str | None = None,
        text: str | None = None,
        mode: str = "dense",
    ) -> list[Hit]:
        """`search` for a query already embedded (query side, this index's model); the
        lexical and hybrid modes need the query's `text` too."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        mode = self.check_mode(mode)
        if mode != "dense" and text is None:
            raise InputError(f"the {mode} mode needs the query's text")
        rows = self._filtered(language, path_glob) if language or path_glob else None
        if rows == []:
            return []
        query = None if vector is None else np.asarray(vector, dtype=np.float32).ravel()
        if mode == "dense":
            pairs = self._dense(query, k, rows)
        elif mode == "lexical":
            pairs = self._lexical(self.lexical.scores(text), k, rows)
        else:
            pairs = self._hybrid(query, text, k, rows)
        return [self._hit(score, row) for score, row in pairs]

    def _dense(self, query: np.ndarray, k: int, rows: list[int] | None) -> list[tuple[float, int]]:
        if rows is not None:
            scores = np.asarray(self.vectors[rows]) @ query
            top = best_positions(scores, k)
            return [(float(scores[i]), rows[i]) for i in top]
        scores, ids = nearest(
            self.faiss, self.vectors, query.reshape(1, -1), min(k, max(1, self.faiss.ntotal))
        )
        return [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

    @staticmethod
    def _lexical(scores: np.ndarray, k: int, rows: list[int] | None) -> list[tuple[float, int]]:
        """The k best rows by BM25 `scores` (of every row), among `rows` if given; a row no
        query term matches is not a hit (so only the matched rows are ranked)."""
        if rows is None:
            among = np.flatnonzero(scores > 0)
        else:
            among = np.asarray(rows, dtype=np.int64)
            among = among[scores[among] > 0]
        top = among[best_positions(scores[among], k)]
        return [(float(scores[r]), int(r)) for r in top]

    def _hybrid(
        self, query: np.ndarray, text: str, k: int, rows: list[int] | None
    ) -> list[tuple[float, int]]:
        """Dense and lexical scores of the union of each one's best rows, fused."""
        depth = max(k, fusion.DEPTH)
        lexical = self.lexical.scores(text)
        pool = fusion.candidates(
            np.asarray([row for _, row in self._dense(query, depth, rows)], dtype=np.int64),
            np.asarray([row for _, row in self._lexical(lexical, depth, rows)], dtype=np.int64),
        )
        if len(pool) == 0:
            return []
        fused = fusion.fuse(
            np.asarray(self.vectors[pool]) @ query,
            lexical[pool],
            fusion=fusion.FUSION,
            weight=fusion.DENSE_WEIGHT,
        )
        top = np.argsort(-fused, kind="stable")[:k]
        return [(float(fused[i]), int(pool[i])) for i in top]

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
