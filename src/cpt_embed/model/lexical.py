"""BM25, the lexical baseline the paper sets dense embeddings against: bm25s (Lucene's
BM25, k1 = 1.5, b = 0.75) over words lowercased, stripped of English stop words and stemmed
(Snowball English, PyStemmer). For code, each identifier also gives its parts
(`getUserName` and `get_user_name` add get, user, name), so a question in words meets the
names of a function; the whole identifier stays, so an exact name still matches best."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import bm25s

K1 = 1.5
B = 0.75
METHOD = "lucene"
STOPWORDS = "en"
STEMMER = "english"
SETTINGS = "bm25.json"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def identifier_parts(identifier: str) -> list[str]:
    """The words of a camelCase, PascalCase or snake_case identifier, in order
    (`parseHTTPResponse_v2` -> parse, HTTP, Response, v, 2)."""
    return _PART.findall(identifier)


def split_identifiers(text: str) -> str:
    """`text` with the parts of every compound identifier written after it."""

    def expand(match: re.Match[str]) -> str:
        word = match.group(0)
        parts = identifier_parts(word)
        return word if len(parts) < 2 else f"{word} {' '.join(parts)}"

    return _IDENTIFIER.sub(expand, text)


def tokenize(texts: list[str], *, code: bool = False) -> list[list[str]]:
    """The BM25 terms of each text: bm25s's words (two or more word characters, lowered),
    English stop words out, Snowball-stemmed; identifiers split first for code."""
    import bm25s
    import Stemmer

    if code:
        texts = [split_identifiers(t) for t in texts]
    return bm25s.tokenize(
        texts,
        stopwords=STOPWORDS,
        stemmer=Stemmer.Stemmer(STEMMER),
        return_ids=False,
        show_progress=False,
    )


class BM25:
    """A BM25 index over `documents`; `code` splits identifiers on both sides."""

    def __init__(self, documents: list[str], *, code: bool = False) -> None:
        import bm25s

        self.code = code
        self.size = len(documents)
        self._index: bm25s.BM25 = bm25s.BM25(k1=K1, b=B, method=METHOD)
        if documents:
            self._index.index(tokenize(documents, code=code), show_progress=False)

    def save(self, folder: Path) -> None:
        """Write the index into `folder`: bm25s's arrays as .npy (never pickled), its
        vocabulary and parameters as JSON, and ours (code, size) in bm25.json."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.size:
            self._index.save(str(folder), allow_pickle=False)
        settings = {"code": self.code, "size": self.size, "method": METHOD, "k1": K1, "b": B}
        (folder / SETTINGS).write_text(json.dumps(settings) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> BM25:
        """The index `save` wrote in `folder`, its arrays memory-mapped."""
        import bm25s

        settings = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
        index = cls([], code=settings["code"])
        index.size = settings["size"]
        if index.size:
            index._index = bm25s.BM25.load(str(folder), mmap=True, allow_pickle=False)
        return index

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every document for `query` (0 where no term matches)."""
        terms = tokenize([query], code=self.code)[0]
        vocabulary = getattr(self._index, "vocab_dict", None) or {}
        known = [t for t in terms if t in vocabulary]
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._index.get_scores(known), dtype=np.float32)

    def top(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices), each (len(queries), min(k, documents)), best first; documents
        no term matches score 0."""
        k = min(k, self.size)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        index = np.zeros((len(queries), k), dtype=np.int64)
        for row, query in enumerate(queries if k else []):
            every = self.scores(query)
            best = np.argpartition(-every, k - 1)[:k] if k < self.size else np.arange(self.size)
            best = best[np.lexsort((best, -every[best]))]
            scores[row], index[row] = every[best], best
        return scores, index

    @staticmethod
    def settings(code: bool) -> dict[str, object]:
        """What produced the scores, for reports."""
        import bm25s

        return {
            "retriever": "bm25",
            "library": f"bm25s {bm25s.__version__}",
            "method": METHOD,
            "k1": K1,
            "b": B,
            "stopwords": STOPWORDS,
            "stemmer": f"snowball {STEMMER} (PyStemmer)",
            "identifiers": "split on camelCase and snake_case, whole kept" if code else "-",
        }
