"""Hard negatives mined with FAISS: for each pair, documents its x ranks high but that are
not its y, skipping the likely false negatives (a document scored above `margin` x the
positive's score, or the positive's own text after normalisation), as sentence-transformers'
mine_hard_negatives (relative_margin = 1 - margin) and FlagEmbedding's hn_mine do. The
candidates are the pairs' own documents or a corpus given apart; ranks count from 1 over
the candidates that survive those exclusions (and the pair's own x text), so rank range
10-100 skips the 9 closest usable documents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpt_embed.curate.output import GroupCounts
from cpt_embed.curate.pairs import PairSet
from cpt_embed.errors import InputError

SAMPLING = ("top", "random")


@dataclass(frozen=True)
class NegativeSettings:
    """How many negatives, from which ranks, and how false negatives are told apart."""

    num: int = 7
    first_rank: int = 10
    last_rank: int = 100
    margin: float = 0.95
    sampling: str = "top"
    seed: int = 0

    def check(self) -> None:
        """Reject impossible settings before any work."""
        if self.num < 1:
            raise InputError(f"--num must be >= 1, got {self.num}")
        if not 1 <= self.first_rank <= self.last_rank:
            raise InputError(
                f"--rank-range {self.first_rank}-{self.last_rank}: use FIRST-LAST with "
                "1 <= FIRST <= LAST, e.g. 10-100"
            )
        if self.last_rank - self.first_rank + 1 < self.num:
            raise InputError(
                f"--rank-range {self.first_rank}-{self.last_rank} holds fewer than "
                f"--num {self.num} ranks; widen it"
            )
        if not 0 < self.margin <= 1:
            raise InputError(f"--margin must be in (0, 1], got {self.margin}")
        if self.sampling not in SAMPLING:
            raise InputError(f"--sampling {self.sampling!r}: use {' or '.join(SAMPLING)}")


def parse_rank_range(text: str) -> tuple[int, int]:
    """'10-100' -> (10, 100)."""
    first, sep, last = text.partition("-")
    if not (sep and first.strip().isdigit() and last.strip().isdigit()):
        raise InputError(f"--rank-range {text!r}: use FIRST-LAST, e.g. 10-100")
    return int(first), int(last)


@dataclass
class Corpus:
    """Candidate documents: unit vectors and the key of each one's normalised text."""

    vectors: np.ndarray
    keys: np.ndarray


def own_documents(pairs: PairSet) -> tuple[Corpus, np.ndarray]:
    """The pairs' distinct documents as a corpus, and the pair row each comes from."""
    keys, rows = np.unique(pairs.y_keys, return_index=True)
    return Corpus(pairs.y[rows], keys), rows


def mine_negatives(
    pairs: PairSet, corpus: Corpus, settings: NegativeSettings, batch: int = 4096
) -> tuple[list[list[int] | None], dict[str, GroupCounts]]:
    """For each pair, `settings.num` corpus indices (None when too few candidates pass),
    and the counts per group."""
    import faiss

    settings.check()
    index = faiss.IndexFlatIP(corpus.vectors.shape[1])
    index.add(np.ascontiguousarray(corpus.vectors, dtype=np.float32))
    depth = min(settings.last_rank + 2, len(corpus.keys))  # + the pair's own y and x texts
    rng = np.random.default_rng(settings.seed)
    chosen: list[list[int] | None] = []
    for start in range(0, len(pairs), batch):
        rows = np.arange(start, min(start + batch, len(pairs)))
        scores, found = index.search(np.ascontiguousarray(pairs.x[rows]), depth)
        positive = np.einsum("ij,ij->i", pairs.x[rows], pairs.y[rows])
        for i, row in enumerate(rows):
            chosen.append(
                _pick(scores[i], found[i], corpus, pairs, row, positive[i], settings, rng)
            )
    counts: dict[str, GroupCounts] = {}
    for row, picked in enumerate(chosen):
        group = counts.setdefault(pairs.group_names[pairs.groups[row]], GroupCounts())
        if picked is None:
            group.dropped += 1
            group.reasons["too few negatives"] = group.reasons.get("too few negatives", 0) + 1
        else:
            group.kept += 1
    return chosen, counts


def _pick(
    scores: np.ndarray,
    found: np.ndarray,
    corpus: Corpus,
    pairs: PairSet,
    row: int,
    positive: float,
    settings: NegativeSettings,
    rng: np.random.Generator,
) -> list[int] | None:
    """The negatives of one pair from its ranked candidates, or None."""
    keys = corpus.keys[np.maximum(found, 0)]
    threshold = positive - abs(positive) * (1 - settings.margin)
    usable = (
        (found >= 0)
        & (keys != pairs.y_keys[row])
        & (keys != pairs.x_keys[row])
        & (scores <= threshold)
    )
    eligible = found[usable][settings.first_rank - 1 : settings.last_rank]
    if len(eligible) < settings.num:
        return None
    if settings.sampling == "random":
        return eligible[np.sort(rng.choice(len(eligible), settings.num, replace=False))].tolist()
    return eligible[: settings.num].tolist()
