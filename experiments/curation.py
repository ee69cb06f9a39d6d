"""Data quality at equal compute: does consistency filtering, mined hard negatives or
false-negative masking make all-MiniLM-L6-v2 a better code-search model than raw pairs?

1. sample  - whole repositories of a mined (docstring, code) pair set, at most `--per-repo`
             pairs each, until `--pairs` pairs (a repository's pairs stay together, so the
             filter ranks each y among its own repository's code);
2. curate  - `cpt pairs filter` and `cpt pairs negatives` on the sample (and on the
             filtered set), scored by the start model itself;
3. train   - every arm x seed on the same number of pairs seen (steps x batch);
4. eval    - the start model and every trained model on CodeSearchNet-Ruby (MRR among 999
             distractors, the paper's Table 7 protocol, and nDCG@10), CoSQA, STS-B and
             SciFact, at one max length;
5. report  - a markdown table (mean over seeds, each seed's figure) and a JSON file.

Every stage picks up where an interrupted run stopped.

    python experiments/curation.py --mined runs/pairs/code [--out runs/curation]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

from cpt_embed.atomic import atomic_file
from cpt_embed.curate.negatives import NegativeSettings
from cpt_embed.curate.steps import Curation, add_negatives, filter_pairs
from cpt_embed.data.shards import pair_files, read_shard, shards_complete
from cpt_embed.eval import evaluate
from cpt_embed.eval.cache import default_cache_dir
from cpt_embed.eval.data import find_data_dir
from cpt_embed.model import Encoder
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import train

TASKS = ["codesearchnet_ruby", "cosqa", "stsb", "scifact"]
COLUMNS = [
    ("codesearchnet_ruby", "mrr_999_distractors", "CSN-Ruby MRR (1,000 cand.)"),
    ("codesearchnet_ruby", "ndcg@10", "CSN-Ruby nDCG@10"),
    ("cosqa", "ndcg@10", "CoSQA nDCG@10"),
    ("stsb", "spearman", "STS-B"),
    ("scifact", "ndcg@10", "SciFact nDCG@10"),
]
# arm -> (pair set, hard negatives field, false-negative margin)
ARMS = {
    "raw": ("raw", None, None),
    "filtered": ("filtered", None, None),
    "raw + hard negatives": ("raw-negatives", "negatives", None),
    "filtered + hard negatives": ("filtered-negatives", "negatives", None),
    "filtered + hard negatives + masking": ("filtered-negatives", "negatives", 0.1),
    "loosely filtered (top 10)": ("filtered-top10", None, None),
    "filtered by the raw-trained model": ("refiltered", None, None),
    "raw + 7 hard negatives": ("raw-negatives7", "negatives", None),
}
# hard-negative set -> (the pair set it is mined from, negatives per pair; None: --negatives)
NEGATIVE_SETS = {
    "raw-negatives": ("raw", None),
    "filtered-negatives": ("filtered", None),
    "raw-negatives7": ("raw", 7),
}
REFILTER_FROM = ("raw", 0)  # E5 and CoRNStack score their filter with a model trained on raw pairs


def sample(mined: Path, out: Path, n_pairs: int, per_repo: int, seed: int) -> Path:
    """Whole repositories (at most `per_repo` pairs each) in a seeded order, to n_pairs."""
    path = out / "raw" / "pairs.jsonl"
    if path.is_file():
        return path.parent
    by_repo: dict[str, list[dict]] = defaultdict(list)
    for file in pair_files(mined):
        for record in read_shard(file):
            by_repo[record.get("repo", "")].append(record)
    rng = random.Random(seed)
    repos = sorted(by_repo)
    rng.shuffle(repos)
    chosen: list[dict] = []
    for repo in repos:
        pairs = by_repo[repo]
        chosen += rng.sample(pairs, min(per_repo, len(pairs)))
        if len(chosen) >= n_pairs:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "w") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen[:n_pairs])
    print(f"sample: {min(len(chosen), n_pairs):,} pairs of {len(by_repo):,} repositories")
    return path.parent


def curate(out: Path, args: argparse.Namespace) -> None:
    """The filtered sets (top 2 and top 10) and the hard-negative sets the chosen arms train
    on, all scored by the start model."""
    curation = Curation(args.model, max_length=args.max_length, resume=True)
    for name, top_k in (("filtered", 2), ("filtered-top10", 10)):
        if not shards_complete(out / name):
            report = filter_pairs(out / "raw", out / name, curation, top_k=top_k)
            print(f"filter top {top_k}: kept {report.kept:,}, dropped {report.dropped:,}")
    for name in dict.fromkeys(ARMS[arm][0] for arm in args.arms):
        if name not in NEGATIVE_SETS or shards_complete(out / name):
            continue
        source, num = NEGATIVE_SETS[name]
        settings = NegativeSettings(
            num=num or args.negatives, first_rank=args.first_rank, last_rank=100
        )
        report = add_negatives(out / source, out / name, curation, settings=settings)
        print(f"{name}: {report.kept:,} pairs kept, {report.dropped:,} dropped")


def refilter(out: Path, args: argparse.Namespace) -> None:
    """The raw pairs filtered (top 2) by the model trained on them (REFILTER_FROM), as E5
    filters with a model trained on the noisy pairs first: the start model keeps the pairs
    it already ranks first, which teach it least."""
    if shards_complete(out / "refiltered"):
        return
    model = train_arm(out, *REFILTER_FROM, args)
    curation = Curation(str(model), max_length=args.max_length, resume=True)
    report = filter_pairs(out / "raw", out / "refiltered", curation)
    print(f"filter by the trained model: kept {report.kept:,}, dropped {report.dropped:,}")


def run_name(arm: str, seed: int) -> str:
    return arm.replace(" + ", "+").replace(" ", "-") + f"-seed{seed}"


def train_arm(out: Path, arm: str, seed: int, args: argparse.Namespace) -> Path:
    """One arm x seed, `--steps` steps of `--batch` pairs (resumed if interrupted); the
    model folder."""
    data, field, margin = ARMS[arm]
    folder = out / "runs" / run_name(arm, seed)
    if (folder / "model" / "cpt_config.json").is_file():
        return folder / "model"
    config = TrainConfig(
        model=args.model,
        data=[str(out / data)],
        output=str(folder),
        batch_size=args.batch,
        max_steps=args.steps,
        max_length=args.max_length,
        lr=args.lr,
        dtype="bfloat16",
        hard_negatives=field,
        false_negative_margin=margin,
        seed=seed,
        save_every=max(args.steps // 4, 1),
        log_every=5,
        resume=folder.exists(),
    )
    return train(config)


def scores(model: str | Path, args: argparse.Namespace, data_dir: Path) -> dict[str, float]:
    """The table's columns for one model, evaluated at --eval-max-length (cached)."""
    cache = Path(args.out) / "eval" / (Path(model).parent.name if model != args.model else "start")
    result_file = cache.with_suffix(".json")
    if result_file.is_file():
        return json.loads(result_file.read_text())
    encoder = Encoder.load(str(model), max_length=args.eval_max_length)
    report = evaluate(encoder, TASKS, data_dir, cache_dir=default_cache_dir())
    by_task = {r.task: r.scores for r in report.results}
    row = {label: by_task[task][metric] for task, metric, label in COLUMNS}  # in percent
    result_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(result_file, "w") as handle:
        json.dump(row, handle, indent=2)
    return row


def table(start: dict[str, float], runs: dict[str, dict[str, float]], seeds: list[int]) -> str:
    """Markdown: the start model, then each arm's mean over seeds (seeds in brackets)."""
    labels = [label for _, _, label in COLUMNS]
    lines = ["| model | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines.append(
        "| all-MiniLM-L6-v2 (start) | " + " | ".join(f"{start[c]:.2f}" for c in labels) + " |"
    )
    for arm in ARMS:
        per_seed = [runs[run_name(arm, s)] for s in seeds if run_name(arm, s) in runs]
        if not per_seed:
            continue
        cells = [
            f"{mean(r[c] for r in per_seed):.2f} ({', '.join(f'{r[c]:.2f}' for r in per_seed)})"
            for c in labels
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mined", type=Path, required=True, help="`cpt pairs code` output")
    parser.add_argument("--out", type=Path, default=Path("runs/curation"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--pairs", type=int, default=12_000, help="pairs in the sample")
    parser.add_argument("--per-repo", type=int, default=1000)
    parser.add_argument("--negatives", type=int, default=1, help="hard negatives per pair")
    parser.add_argument("--first-rank", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text, training")
    parser.add_argument("--eval-max-length", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    args = parser.parse_args(argv)
    out = args.out
    sample(args.mined, out, args.pairs, args.per_repo, seed=0)
    curate(out, args)
    data_dir = find_data_dir()
    start = scores(args.model, args, data_dir)
    runs = {}
    for arm in args.arms:  # each model evaluated as soon as it is trained
        if ARMS[arm][0] == "refiltered":
            refilter(out, args)
        for seed in args.seeds:
            model = train_arm(out, arm, seed, args)
            runs[run_name(arm, seed)] = scores(model, args, data_dir)
    text = table(start, runs, args.seeds)
    with atomic_file(out / "results.json", "w") as handle:
        json.dump(
            {
                "settings": {**vars(args), "mined": str(args.mined), "out": str(out)},
                "start": start,
                "runs": runs,
            },
            handle,
            indent=2,
        )
    print(text)
    print(f"\npairs seen per run: {args.steps * args.batch:,}", file=sys.stderr)


if __name__ == "__main__":
    main()
