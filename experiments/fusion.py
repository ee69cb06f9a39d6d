"""How hybrid search fuses dense and BM25 scores, chosen on development splits only.

The development splits of the evaluation data: CoSQA dev (500 queries), CodeSearchNet-Ruby
dev (1,400 queries against the same 2,661 functions) and SciFact train (809 queries; SciFact
has no dev split). Cranfield and CISI have none and take the rule the others chose. For
every fusion (convex with the dense weight 0.0, 0.1, ..., 1.0; reciprocal-rank fusion),
nDCG@10 on each development split. The rule (the issue's own guard, applied to development
data): the best mean among the fusions that lose at most 1 point against the better of
dense and BM25 on every split; it becomes the default in src/cpt_embed/model/fusion.py by
hand. Test splits are never read here.

    python experiments/fusion.py [--model default] [--out docs/results/fusion.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from cpt_embed.atomic import atomic_file
from cpt_embed.eval.cache import CachedEncoder, default_cache_dir
from cpt_embed.eval.context import Context
from cpt_embed.eval.data import find_data_dir
from cpt_embed.eval.retrieval import run_retrieval
from cpt_embed.model import Encoder, fusion

DEV_SPLITS = [
    ("cosqa", "code_search/cosqa", "code", "dev"),
    ("codesearchnet_ruby", "code_search/codesearchnet_ruby", "code", "dev"),
    ("scifact", "retrieval/scifact", "retrieval", "train"),
]
WEIGHTS = [round(0.05 * i, 2) for i in range(21)]
GUARD = 1.0  # points a fusion may lose on any split against the better retriever alone


def sweep(ctx: Context) -> dict[str, dict[str, float]]:
    """fusion name -> development split -> nDCG@10 (dense and bm25 alone included)."""
    settings = [("dense", None, None), ("bm25", None, None), ("rrf", "rrf", 0.5)]
    settings += [(f"convex {w}", "convex", w) for w in WEIGHTS]
    table: dict[str, dict[str, float]] = {}
    for name, method, weight in settings:
        ctx.retriever = name if method is None else "hybrid"
        if method is not None:
            fusion.FUSION, fusion.DENSE_WEIGHT = method, weight
        for task, folder, group, split in DEV_SPLITS:
            result = run_retrieval(ctx, task, folder, group, split=split)
            table.setdefault(name, {})[f"{task} {split}"] = result.scores["ndcg@10"]
        table[name]["mean"] = mean(v for k, v in table[name].items() if k != "mean")
        print(f"{name:<12} " + "  ".join(f"{k} {v:6.2f}" for k, v in table[name].items()))
    return table


def choose(table: dict[str, dict[str, float]]) -> str:
    """The best mean among fusions within GUARD of the better retriever alone on every
    split (the best mean of all when none is)."""
    splits = [k for k in table["dense"] if k != "mean"]
    better = {s: max(table["dense"][s], table["bm25"][s]) for s in splits}
    hybrids = {k: v for k, v in table.items() if k not in ("dense", "bm25")}
    guarded = {k: v for k, v in hybrids.items() if all(v[s] >= better[s] - GUARD for s in splits)}
    pool = guarded or hybrids
    return max(pool, key=lambda k: pool[k]["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/results/fusion.json"))
    args = parser.parse_args()
    encoder = Encoder.load(args.model)
    embedder = CachedEncoder(encoder, default_cache_dir(), dtype="bfloat16", compile=False)
    ctx = Context(embedder, find_data_dir(args.data))
    table = sweep(ctx)
    best = choose(table)
    report = {"model": args.model, "splits": [d[:4] for d in DEV_SPLITS], "ndcg@10": table}
    report["rule"] = f"best mean within {GUARD} point of the better retriever on every split"
    report["chosen"] = best
    with atomic_file(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"chosen on the development splits: {best} (mean nDCG@10 {table[best]['mean']:.2f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
