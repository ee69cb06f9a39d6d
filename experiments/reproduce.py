"""`make reproduce`: the paper's claims at small scale, from a GPT-style start point.

Reads a plan (experiments/plans/cpu.yaml or gpu.yaml) and runs four stages, each of which
picks up where an interrupted run stopped:

1. pairs  - neighbour-passage pairs from the Wikipedia extract in ../shared/data/unsupervised
            and (docstring, code) pairs from the Python standard library and site-packages,
            minus anything in the evaluation sets;
2. train  - every run of the plan with `cpt_embed.train` (checkpoints, `resume`);
3. eval   - the start points and every trained model on the plan's tasks (cached);
4. report - tables, plots and the discussion inputs into docs/results.md (between the
            `reproduce` markers) and docs/reproduce/.

    python experiments/reproduce.py [--plan cpu|gpu|FILE] [--device cuda] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

from cpt_embed.data.mine import code_exclusions, mine_code, mine_text, text_exclusions
from cpt_embed.data.shards import shards_complete
from cpt_embed.eval import evaluate, select_tasks
from cpt_embed.eval.cache import default_cache_dir
from cpt_embed.eval.data import find_data_dir
from cpt_embed.eval.held_out import (
    held_out_code,
    held_out_code_sets,
    held_out_text_sets,
    held_out_texts,
)
from cpt_embed.eval.periodic import periodic_evaluation
from cpt_embed.eval.report import averages, read_json, write_json
from cpt_embed.model import Encoder
from cpt_embed.train.checkpoints import latest_checkpoint
from cpt_embed.train.config import TrainConfig
from cpt_embed.train.loop import train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK_BEGIN = "<!-- reproduce:begin -->"
MARK_END = "<!-- reproduce:end -->"
console = Console()


# ------------------------------------------------------------------------------ plan
def load_plan(name: str) -> dict[str, Any]:
    path = Path(name) if name.endswith((".yaml", ".yml")) else HERE / "plans" / f"{name}.yaml"
    if not path.is_file():
        sys.exit(f"plan {name!r}: {path} not found; use cpu, gpu or a YAML file")
    plan = yaml.safe_load(path.read_text(encoding="utf-8"))
    plan["file"] = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return plan


def expand_runs(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per (run, seed), with the plan's defaults filled in."""
    runs = []
    for run in plan["runs"]:
        for seed in run.get("seeds", [0]):
            settings = {**plan["train"], **{k: v for k, v in run.items() if k != "seeds"}}
            settings["seed"] = seed
            settings["name"] = run["name"] if seed == 0 else f"{run['name']}-seed{seed}"
            runs.append(settings)
    return runs


# ------------------------------------------------------------------------------ stage 1
def mine_pairs(plan: dict[str, Any], out: Path, data_dir: Path) -> dict[str, Path]:
    pairs = plan["pairs"]
    folders = {"text": out / "pairs" / "text", "code": out / "pairs" / "code"}
    console.rule("1. pairs")
    if all(shards_complete(folder) for folder in folders.values()):
        # mined before, here or on another machine (the code sources are that machine's)
        console.print(f"mined before: {', '.join(str(f) for f in folders.values())}")
        return folders
    tokenizer = Encoder.load("default").tokenizer

    def count_tokens(texts: list[str]) -> list[int]:
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    text = mine_text(
        [data_dir / pairs.get("text_source", "unsupervised/wikipedia_en/docs.jsonl")],
        folders["text"],
        count_tokens=count_tokens,
        max_tokens=pairs["max_tokens"],
        limit=pairs["text"],
        exclusions=text_exclusions(held_out_texts(held_out_text_sets(data_dir))),
        resume=True,
    )
    console.print(f"text: {text.pairs:,} neighbour pairs in {text.seconds:.0f}s")
    code = mine_code(
        code_sources(),
        folders["code"],
        limit=pairs["code"],
        languages=["python"],
        exclusions=code_exclusions(held_out_code(held_out_code_sets(data_dir))),
        resume=True,
    )
    console.print(f"code: {code.pairs:,} docstring/code pairs in {code.seconds:.0f}s")
    return folders


def code_sources() -> list[Path]:
    """The Python standard library and the packages installed beside it: real code, on
    every machine that runs this."""
    import json as stdlib_module
    import site

    stdlib = Path(stdlib_module.__file__).parent.parent
    return [stdlib, *(Path(p) for p in site.getsitepackages() if Path(p).is_dir())]


# ------------------------------------------------------------------------------ stage 2
def train_runs(
    runs: list[dict[str, Any]], pairs: dict[str, Path], out: Path, device: str | None
) -> None:
    console.rule("2. train")
    for run in runs:
        folder = out / "runs" / run["name"]
        if (folder / "model" / "cpt_config.json").is_file():
            console.print(f"{run['name']}: done before")
            continue
        settings = {k: v for k, v in run.items() if k not in ("name", "about", "extra_tasks")}
        settings["data"] = [f"{pairs[part]}:{weight}" for part, weight in run["data"].items()]
        settings["output"] = str(folder)
        settings["device"] = device
        settings["resume"] = latest_checkpoint(folder) is not None
        console.print(f"[bold]{run['name']}[/]: {run.get('about', '')}", highlight=False)
        started = time.perf_counter()
        config = TrainConfig(**settings)
        evaluation = periodic_evaluation(config.eval_tasks) if config.eval_every else None
        train(config, evaluate=evaluation)
        console.print(f"  {time.perf_counter() - started:.0f}s")


# ------------------------------------------------------------------------------ stage 3
def evaluate_models(
    plan: dict[str, Any],
    runs: list[dict[str, Any]],
    out: Path,
    data_dir: Path,
    device: str | None,
    chosen: set[str],
) -> None:
    """The plan's tasks for every row first (the comparable tables), then each row's extra
    tasks; the report is written after every task, so an interruption loses none."""
    console.rule("3. evaluate")
    entries = [(ref["name"], ref["model"], ref) for ref in plan["references"]]
    entries += [(run["name"], str(out / "runs" / run["name"] / "model"), run) for run in runs]
    entries = [entry for entry in entries if entry[0] in chosen]
    plan_tasks = select_tasks(plan["eval"]["tasks"])
    for with_extras in (False, True):
        for name, model, entry in entries:
            path = out / "eval" / f"{name}.json"
            wanted = plan_tasks
            if with_extras and entry.get("extra_tasks"):
                wanted = select_tasks([plan["eval"]["tasks"], entry["extra_tasks"]])
            done = read_json(path)[0] if path.is_file() else None
            have = {r.task for r in done.results} if done else set()
            missing = [task for task in wanted if task not in have]
            if not missing:
                continue
            console.print(f"[bold]{name}[/]", highlight=False)
            encoder = Encoder.load(model, device=device, max_length=plan["eval"]["max_length"])
            for task in missing:
                report = evaluate(
                    encoder,
                    [task],
                    data_dir,
                    cache_dir=default_cache_dir(),
                    compile=plan["eval"].get("compile", False),
                    on_result=lambda r: console.print(f"  {r.task:<20} {r.score:6.2f}"),
                )
                report.model = name
                done = done.merge(report) if done else report
                write_json([done], path)


# ------------------------------------------------------------------------------ stage 4
def scores_of(path: Path, plan_tasks: set[str]) -> dict[str, float]:
    """Headline score per task, `TASK METRIC` for every metric, group averages, and
    `all avg` over the plan's tasks (a row's extra tasks left out, so rows compare)."""
    report = read_json(path)[0]
    scores = {r.task: r.score for r in report.results}
    for result in report.results:
        scores.update({f"{result.task} {metric}": value for metric, value in result.scores.items()})
    scores.update(averages(report))
    scores["all avg"] = float(np.mean([r.score for r in report.results if r.task in plan_tasks]))
    return scores


def table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, scores in rows.items():
        cells = [f"{scores[c]:.2f}" if c in scores else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_noise(rows: dict[str, dict[str, float]], run: str, column: str) -> float | None:
    """|seed 0 - seed 1| of `run` on `column`: the scale a difference must beat."""
    other = rows.get(f"{run}-seed1")
    if run not in rows or other is None or column not in rows[run] or column not in other:
        return None
    return abs(rows[run][column] - other[column])


def comparisons(plan: dict[str, Any], rows: dict[str, dict[str, float]]) -> str:
    noise_run = plan["report"]["seed_run"]
    lines = [
        "| comparison | column | a | b | b - a | seed noise | beyond noise |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for a, b, about in plan["report"]["comparisons"]:
        if a not in rows or b not in rows:
            continue
        for column in plan["report"]["columns"]:
            if column not in rows[a] or column not in rows[b]:
                continue
            delta = rows[b][column] - rows[a][column]
            noise = seed_noise(rows, noise_run, column)
            beyond = "-" if noise is None else ("yes" if abs(delta) > 2 * noise else "no")
            noise_text = "-" if noise is None else f"{noise:.2f}"
            lines.append(
                f"| {about} | {column} | {rows[a][column]:.2f} | {rows[b][column]:.2f} "
                f"| {delta:+.2f} | {noise_text} | {beyond} |"
            )
    return "\n".join(lines)


def curves(
    runs: list[dict[str, Any]], out: Path, docs: Path, names: list[str], tasks: list[str]
) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    axes = axes[0]
    drawn = False
    for run in runs:
        if run["name"] not in names:
            continue
        log = out / "runs" / run["name"] / "metrics.jsonl"
        if not log.is_file():
            continue
        points = [json.loads(line) for line in log.read_text().splitlines() if '"eval"' in line]
        for ax, task in zip(axes, tasks, strict=True):
            xs = [p["step"] * run["batch_size"] for p in points if task in p["eval"]]
            ys = [p["eval"][task] for p in points if task in p["eval"]]
            if xs:
                ax.plot(xs, ys, marker="o", label=run["name"])
                ax.set_title(f"{task} during training")
                ax.set_xlabel("pairs seen")
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = docs / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(rows: dict[str, dict[str, float]], names: list[str], columns: list[str], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in names if n in rows]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(columns) * len(names) / 2), 4))
    width = 0.8 / len(names)
    x = np.arange(len(columns))
    for i, name in enumerate(names):
        ax.bar(x + i * width, [rows[name].get(c, 0) for c in columns], width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, columns)
    ax.set_ylabel("score x 100")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(
    plan, runs, reports: dict[str, Path], out: Path, docs_root: Path, seconds: float
) -> Path:
    console.rule("4. report")
    docs = docs_root / "reproduce" / plan["name"]
    docs.mkdir(parents=True, exist_ok=True)
    tasks = select_tasks(plan["eval"]["tasks"])
    plan_tasks = set(tasks)
    extras = [e.get("extra_tasks", "") for e in [*plan["references"], *plan["runs"]]]
    every_task = select_tasks([plan["eval"]["tasks"], *extras])
    rows = {name: scores_of(path, plan_tasks) for name, path in reports.items() if path.is_file()}
    summary_columns = plan["report"]["columns"]
    curve_tasks = select_tasks(plan["train"].get("eval_tasks", "stsb"))
    curve = curves(runs, out, docs, plan["report"]["curves"], curve_tasks)
    batch_plot = bars(rows, plan["report"]["batch_runs"], summary_columns, docs / "batch.png")
    settings = "\n".join(
        f"| {r['name']} | {r['model']} | {', '.join(f'{k}:{v}' for k, v in r['data'].items())} "
        f"| {r['batch_size']} | {r['max_steps']} | {r['batch_size'] * r['max_steps']:,} "
        f"| {r.get('learn_tau', True)} | {r.get('about', '')} |"
        for r in runs
    )
    relative = docs.relative_to(docs_root)
    command = plan.get("command", "make reproduce")
    text = f"""{MARK_BEGIN}
### Plan `{plan["name"]}` ({plan["file"]}) on {plan["hardware"]}

{seconds / 60:.0f} minutes from the first start of the run to its last evaluation.

Command: `{command}` (`python experiments/reproduce.py --plan {plan["name"]}`).
Evaluation: {", ".join(tasks)}, texts cut to {plan["eval"]["max_length"]} tokens.

Summary (headline score x 100 per task group and over all tasks):

{table(rows, summary_columns)}

Every task (a `-`: not evaluated for that row):

{table(rows, every_task)}

Differences against seed noise (`beyond noise`: larger than twice the gap between two seeds
of `{plan["report"]["seed_run"]}`):

{comparisons(plan, rows)}

Runs (equal compute within each ablation: the same pairs seen):

| run | start | data | batch | steps | pairs seen | learned tau | about |
|---|---|---|---:|---:|---:|---|---|
{settings}

{f"![scores during training]({relative}/curves.png)" if curve else ""}
{f"![batch-size ablation]({relative}/batch.png)" if batch_plot else ""}
{MARK_END}"""
    results = docs_root / "results.md"
    current = results.read_text(encoding="utf-8") if results.is_file() else ""
    pattern = re.compile(
        re.escape(MARK_BEGIN) + rf"\n### Plan `{plan['name']}`.*?" + re.escape(MARK_END), re.S
    )
    if pattern.search(current):
        current = pattern.sub(lambda _: text, current)
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    results.write_text(current, encoding="utf-8")
    (docs / "scores.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    console.print(table(rows, summary_columns))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default=None, help="cpu, gpu or a YAML file (default: by device)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: auto)")
    parser.add_argument("--data", type=Path, default=None, help="evaluation data dir")
    parser.add_argument(
        "--out", type=Path, default=None, help="work folder (default: runs/reproduce-PLAN)"
    )
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where results.md is")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="train and evaluate only these rows (references or runs); the report keeps all",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the report from the evaluations finished so far",
    )
    args = parser.parse_args(argv)
    import torch

    cuda = args.device == "cuda" or (args.device is None and torch.cuda.is_available())
    plan = load_plan(args.plan or ("gpu" if cuda else "cpu"))
    out = args.out or ROOT / "runs" / f"reproduce-{plan['name']}"
    data_dir = find_data_dir(args.data)
    out.mkdir(parents=True, exist_ok=True)
    first_start = out / "started"
    if not first_start.is_file():
        first_start.write_text(f"{time.time()}\n")
    runs = expand_runs(plan)
    names = [ref["name"] for ref in plan["references"]] + [run["name"] for run in runs]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        sys.exit(
            f"--only {' '.join(unknown)}: not in plan {plan['name']}; its rows: {' '.join(names)}"
        )
    if not args.report_only:
        chosen = set(args.only or names)
        pairs = mine_pairs(plan, out, data_dir)
        train_runs([r for r in runs if r["name"] in chosen], pairs, out, args.device)
        evaluate_models(plan, runs, out, data_dir, args.device, chosen)
    reports = {name: out / "eval" / f"{name}.json" for name in names}
    finished = [path.stat().st_mtime for path in reports.values() if path.is_file()]
    elapsed = max(finished, default=time.time()) - float(first_start.read_text())
    path = report(plan, runs, reports, out, args.docs, elapsed)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
