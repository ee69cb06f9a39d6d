"""Neighbour pairs from unlabeled documents: split each document into passages on paragraph
and sentence boundaries up to a token budget, pair passage i with passage i + window, and
drop pairs that are too short, not prose, exact or near duplicates, or in evaluation sets."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cpt_embed.data.code_pairs import normalized_hash

# A sentence ends at . ! ? and any closing quotes or brackets; group 1 is the space after.
_SENTENCE_END = re.compile(r"[.!?。][\"')\]]*(\s+)(?=[\"'(\[]?[A-Z0-9À-Ý])")
_SHINGLE = 5
# Characters tokenized per count_tokens call, and the longest paragraph counted whole
# (longer ones are cut at whitespace first): a fast tokenizer holds about 200 bytes per
# character while it works, so a 50 MB document in one call would take 10 GB.
_COUNT_CHARS = 1_000_000


@dataclass
class PassageSplitter:
    """Packs paragraphs (or, when a paragraph is too long, its sentences, and when a
    sentence is too long, its words) into passages of at most `max_tokens` tokens."""

    count_tokens: Callable[[list[str]], list[int]]
    max_tokens: int = 128

    def _count(self, texts: list[str]) -> list[int]:
        """count_tokens of `texts`, called on at most _COUNT_CHARS characters at a time
        (unless one text is longer)."""
        counts: list[int] = []
        batch: list[str] = []
        size = 0
        for text in texts:
            if batch and size + len(text) > _COUNT_CHARS:
                counts += self.count_tokens(batch)
                batch, size = [], 0
            batch.append(text)
            size += len(text)
        return counts + (self.count_tokens(batch) if batch else [])

    def _units(self, paragraph: str, tokens: int) -> list[tuple[str, int]]:
        if tokens <= self.max_tokens:
            return [(paragraph, tokens)]
        sentences = _sentences(paragraph)
        lengths = [tokens] if sentences == [paragraph] else self._count(sentences)
        units = []
        for sentence, n in zip(sentences, lengths, strict=True):
            if n <= self.max_tokens:
                units.append((sentence, n))
                continue
            units += self._pieces(sentence.split(), n)
        return units

    def _pieces(self, words: list[str], tokens: int) -> list[tuple[str, int]]:
        """Runs of `words` (`tokens` in all) of at most max_tokens tokens, a longer single
        word alone: cut by the mean tokens a word, and again where words differ in tokens."""
        step = max(1, len(words) * self.max_tokens // tokens)
        runs = [words[i : i + step] for i in range(0, len(words), step)]
        pieces = [" ".join(run) for run in runs]
        out: list[tuple[str, int]] = []
        for run, piece, n in zip(runs, pieces, self._count(pieces), strict=True):
            if n > self.max_tokens and len(run) > 1:
                out += self._pieces(run, n)
            else:
                out.append((piece, n))
        return out

    def split(self, document: str) -> list[tuple[str, int]]:
        """(passage, tokens) in document order."""
        separator = r"\n\s*\n" if re.search(r"\n\s*\n", document) else r"\n"
        paragraphs = [
            piece
            for p in re.split(separator, document)
            for piece in _cut(p, _COUNT_CHARS)
            if piece.strip()
        ]
        if not paragraphs:
            return []
        units = [
            u
            for p, n in zip(paragraphs, self._count(paragraphs), strict=True)
            for u in self._units(p, n)
        ]
        passages: list[tuple[str, int]] = []
        text, tokens = "", 0
        for unit, n in units:
            if text and tokens + n > self.max_tokens:
                passages.append((text, tokens))
                text, tokens = "", 0
            text, tokens = (f"{text}\n{unit}" if text else unit), tokens + n
        if text:
            passages.append((text, tokens))
        return passages


def _sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph, cut at the space after each sentence end."""
    cuts = [m.span(1) for m in _SENTENCE_END.finditer(paragraph)]
    starts = [0, *(end for _, end in cuts)]
    ends = [*(start for start, _ in cuts), len(paragraph)]
    pieces = (paragraph[a:b].strip() for a, b in zip(starts, ends, strict=True))
    return [piece for piece in pieces if piece]


def _cut(text: str, limit: int) -> list[str]:
    """`text` stripped, in pieces of at most `limit` characters cut at whitespace (anywhere in
    a run of `limit` characters without any)."""
    pieces = []
    text = text.strip()
    while len(text) > limit:
        cut = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit))
        cut = cut if cut > 0 else limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [*pieces, text]


def prose_ratio(text: str) -> float:
    """Share of letters and spaces among all characters (low for tables, code, markup)."""
    if not text:
        return 0.0
    return sum(c.isalpha() or c.isspace() for c in text) / len(text)


def _shingles(text: str) -> list[bytes]:
    words = text.lower().split()
    if len(words) <= _SHINGLE:
        return [" ".join(words).encode()]
    return [" ".join(words[i : i + _SHINGLE]).encode() for i in range(len(words) - _SHINGLE + 1)]


@dataclass
class TextFilter:
    """Pair filters with counts per reason. Near duplicates: MinHash LSH over word
    5-shingles of x + y, Jaccard threshold `near_duplicate`."""

    min_tokens: int = 16
    min_prose: float = 0.75
    near_duplicate: float = 0.8
    num_perm: int = 64
    held_out: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        from datasketch import MinHashLSH

        self._lsh = MinHashLSH(threshold=self.near_duplicate, num_perm=self.num_perm)
        self._keys = 0

    def _minhash(self, text: str):
        from datasketch import MinHash

        signature = MinHash(num_perm=self.num_perm, seed=1)
        signature.update_batch(_shingles(text))
        return signature

    def remember(self, x: str, y: str) -> None:
        """Count a kept pair as seen (also used to rebuild state on resume)."""
        self.seen.update((normalized_hash(x), normalized_hash(y)))
        self._lsh.insert(str(self._keys), self._minhash(f"{x} {y}"))
        self._keys += 1

    def reason(self, x: str, x_tokens: int, y: str, y_tokens: int) -> str | None:
        if min(x_tokens, y_tokens) < self.min_tokens:
            return "too_short"
        if min(prose_ratio(x), prose_ratio(y)) < self.min_prose:
            return "not_prose"
        keys = (normalized_hash(x), normalized_hash(y))
        if any(k in self.held_out for k in keys):
            return "in_evaluation_set"
        if any(k in self.seen for k in keys):
            return "duplicate"
        if self._lsh.query(self._minhash(f"{x} {y}")):
            return "near_duplicate"
        return None

    def keep(self, x: str, x_tokens: int, y: str, y_tokens: int) -> bool:
        reason = self.reason(x, x_tokens, y, y_tokens)
        self.counts["kept" if reason is None else reason] += 1
        if reason is None:
            self.remember(x, y)
        return reason is None


def neighbour_pairs(
    passages: list[tuple[str, int]],
    *,
    window: int,
    stride: int,
    max_pairs: int,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """Index pairs (i, i + window) every `stride` passages; at most `max_pairs`, chosen at
    random (seeded) and kept in document order."""
    starts = list(range(0, len(passages) - window, stride))
    if max_pairs and len(starts) > max_pairs:
        starts = sorted(rng.choice(starts, size=max_pairs, replace=False).tolist())
    return [(i, i + window) for i in starts]
