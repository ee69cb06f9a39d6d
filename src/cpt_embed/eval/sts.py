"""Sentence similarity: Spearman x 100 between cosine similarity and the gold scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpt_embed.errors import InputError
from cpt_embed.eval.context import Context, TaskResult
from cpt_embed.eval.data import STSPairs, load_sts
from cpt_embed.eval.metrics import spearman

# task -> file, or folder of subset files (all.tsv pools them)
STS_SOURCES = {
    "stsb": "sts/stsb/test.tsv",
    "sickr": "sts/sickr/test.tsv",
    "sts12": "sts/sts12",
    "sts13": "sts/sts13",
    "sts14": "sts/sts14",
    "sts15": "sts/sts15",
    "sts16": "sts/sts16",
}
PROTOCOL = "Spearman x 100 of the cosine of each pair against the gold scores (SentEval, MTEB)"
POOLED_PROTOCOL = (
    f"{PROTOCOL}; spearman: every subset pooled, spearman_wmean: the subsets' size-weighted mean"
)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of `a` with the same row of `b`."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def _score(pairs: STSPairs, lookup: dict[str, np.ndarray]) -> float:
    left = np.stack([lookup[t] for t in pairs.sentences1])
    right = np.stack([lookup[t] for t in pairs.sentences2])
    return spearman(cosine_rows(left, right), pairs.scores)


def _embed_all(ctx: Context, pairs: STSPairs) -> dict[str, np.ndarray]:
    unique = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    return dict(zip(unique, ctx.embed(unique), strict=True))


def run_sts(ctx: Context, task: str, source: str | Path) -> TaskResult:
    """Spearman on the `source` TSV (below the data dir unless absolute); for a folder of
    subsets (STS12-16) on all of them pooled in all.tsv, plus each subset and their
    size-weighted mean."""
    source = ctx.data_dir / source
    if source.suffix == ".tsv":
        pairs = load_sts(source, ctx.checksums)
        score = _score(pairs, _embed_all(ctx, pairs))
        return TaskResult(
            task, "sts", "spearman", {"spearman": score}, size=len(pairs.scores), protocol=PROTOCOL
        )
    pooled = load_sts(source / "all.tsv", ctx.checksums)
    subsets = {
        p.stem: load_sts(p, ctx.checksums) for p in sorted(source.glob("*.tsv")) if p.stem != "all"
    }
    if not subsets:
        raise FileNotFoundError(f"{source}: no subset files beside all.tsv")
    lookup = _embed_all(ctx, pooled)
    missing = [s for p in subsets.values() for s in p.sentences1 + p.sentences2 if s not in lookup]
    if missing:
        raise InputError(f"{source / 'all.tsv'}: lacks subset sentence {missing[0][:60]!r}")
    per_subset = {name: _score(pairs, lookup) for name, pairs in subsets.items()}
    sizes = {name: len(pairs.scores) for name, pairs in subsets.items()}
    weighted = sum(per_subset[n] * sizes[n] for n in subsets) / sum(sizes.values())
    return TaskResult(
        task,
        "sts",
        "spearman",
        {"spearman": _score(pooled, lookup), "spearman_wmean": weighted},
        details={"subsets": per_subset, "subset_sizes": sizes},
        size=len(pooled.scores),
        protocol=POOLED_PROTOCOL,
    )
