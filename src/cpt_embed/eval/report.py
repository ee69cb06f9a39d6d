"""Reports of evaluation runs: a terminal table (side by side with deltas), JSON, a plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cpt_embed.atomic import atomic_file, check_output_file
from cpt_embed.errors import InputError
from cpt_embed.eval.classification import SENTEVAL_7, SENTEVAL_7_PROTOCOL
from cpt_embed.eval.context import TaskResult
from cpt_embed.eval.suite import ModelReport


def averages(report: ModelReport) -> dict[str, float]:
    """Mean headline score per task group, and over the 7 SentEval probe tasks."""
    groups: dict[str, list[float]] = {}
    for result in report.results:
        groups.setdefault(result.group, []).append(result.score)
    out = {f"{group} avg": float(np.mean(scores)) for group, scores in groups.items()}
    senteval = [r.score for r in report.results if r.task in SENTEVAL_7]
    if len(senteval) == len(SENTEVAL_7):
        out["senteval-7 avg"] = float(np.mean(senteval))
    return out


def to_json(reports: list[ModelReport]) -> dict[str, Any]:
    """Every number and every setting of the run."""
    return {
        "models": [
            {
                "model": r.model,
                "settings": r.settings,
                "seconds": r.seconds,
                "data_checksum": r.data_checksum,
                "data_files": r.data_files,
                "averages": averages(r),
                "results": [asdict(x) for x in r.results],
            }
            for r in reports
        ]
    }


def check_outputs(report: Path, plot: Path | None = None, table: Path | None = None) -> None:
    """Refuse, before any evaluation, a report, plot or Markdown path that cannot be
    written, and a plot without matplotlib."""
    check_output_file(report, "--output")
    if table is not None:
        check_output_file(table, "--markdown")
    if plot is not None:
        check_output_file(plot, "--plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("--plot needs matplotlib: pip install 'cpt-embed[plot]'") from None


def write_json(reports: list[ModelReport], path: Path) -> Path:
    """Write `to_json` atomically."""
    with atomic_file(path, "w") as handle:
        json.dump(to_json(reports), handle, indent=2)
        handle.write("\n")
    return path


def read_json(path: Path) -> list[ModelReport]:
    """The reports a `write_json` file holds, to compare or print them again."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    reports = []
    for item in data["models"]:
        report = ModelReport(
            item["model"],
            item["settings"],
            [TaskResult(**r) for r in item["results"]],
            item.get("data_files", {}),
            item.get("data_checksum", ""),
            item.get("seconds", 0.0),
        )
        reports.append(report)
    return reports


def _delta(value: float) -> str:
    colour = "green" if value > 0 else "red" if value < 0 else "dim"
    return f"[{colour}]{value:+.2f}[/]"


def _rows(reports: list[ModelReport]) -> list[TaskResult]:
    """One result per task in the order the tasks first appear across the reports (a model
    such as bm25 runs only some tasks), each the first model's that has it."""
    first: dict[str, TaskResult] = {}
    for report in reports:
        for result in report.results:
            first.setdefault(result.task, result)
    return list(first.values())


def protocols(reports: list[ModelReport]) -> list[tuple[str, str]]:
    """(tasks, protocol) for every distinct protocol of the reports' results, so that every
    number says how it was made; the SentEval-7 average's own when it is there."""
    tasks: dict[str, list[str]] = {}
    for report in reports:
        for result in report.results:
            if result.protocol:
                named = tasks.setdefault(result.protocol, [])
                if result.task not in named:
                    named.append(result.task)
    out = [(", ".join(names), text) for text, names in tasks.items()]
    if any("senteval-7 avg" in averages(r) for r in reports):
        out.append(("senteval-7 avg", SENTEVAL_7_PROTOCOL))
    return out


def _cells(
    results: list[dict[str, TaskResult]], task: str, metric: str, base: float | None
) -> list[str]:
    """A row's score and delta cells, one model after another ('-' where it lacks them)."""
    cells = []
    for i, by_task in enumerate(results):
        value = by_task[task].scores.get(metric) if task in by_task else None
        cells.append("-" if value is None else f"{value:.2f}")
        if i:
            known = value is not None and base is not None
            cells.append(_delta(value - base) if known else "-")
    return cells


def print_table(reports: list[ModelReport], console: Console) -> None:
    """One row per task (and per group average), one column per model, deltas vs the first;
    then the protocol of every number."""
    side = reports[0].settings["symmetric_side"]
    table = Table(title=f"cpt eval (symmetric tasks on the {side} side; scores x 100)")
    for column in ("task", "group", "metric"):
        table.add_column(column)
    for i, report in enumerate(reports):
        table.add_column(escape(f"[{i}] {report.model}"), justify="right")
        if i:
            table.add_column(escape(f"Δ [{i}]-[0]"), justify="right")
    by_model = [{r.task: r for r in report.results} for report in reports]
    for result in _rows(reports):
        base = by_model[0].get(result.task)
        for metric in [result.metric, *(m for m in result.scores if m != result.metric)]:
            headline = metric == result.metric
            row = [result.task if headline else "", result.group if headline else "", metric]
            row += _cells(by_model, result.task, metric, base and base.scores.get(metric))
            table.add_row(*row, style=None if headline else "dim")
    table.add_section()
    model_averages = [averages(r) for r in reports]
    for name in dict.fromkeys(n for avg in model_averages for n in avg):
        row = [name, "", "mean"]
        base = model_averages[0].get(name)
        for i, avg in enumerate(model_averages):
            value = avg.get(name)
            row.append("-" if value is None else f"{value:.2f}")
            if i:
                known = value is not None and base is not None
                row.append(_delta(value - base) if known else "-")
        table.add_row(*row, style="bold")
    console.print(table)
    for tasks, text in protocols(reports):
        console.print(f"[dim]{escape(tasks)}:[/] {escape(text)}", highlight=False)


def markdown(reports: list[ModelReport]) -> str:
    """A Markdown table of every score (one column per model), then the averages and the
    protocol of every number."""
    names = [r.model for r in reports]
    lines = [
        "| task | group | metric | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    by_model = [{r.task: r for r in report.results} for report in reports]
    for result in _rows(reports):
        for metric in [result.metric] + [m for m in result.scores if m != result.metric]:
            values = [
                f"{m[result.task].scores[metric]:.2f}"
                if result.task in m and metric in m[result.task].scores
                else "-"
                for m in by_model
            ]
            task = result.task if metric == result.metric else ""
            group = result.group if metric == result.metric else ""
            lines.append(f"| {task} | {group} | {metric} | " + " | ".join(values) + " |")
    model_averages = [averages(r) for r in reports]
    for name in dict.fromkeys(n for avg in model_averages for n in avg):
        values = [f"{avg[name]:.2f}" if name in avg else "-" for avg in model_averages]
        lines.append(f"| **{name}** | | mean | " + " | ".join(values) + " |")
    lines.append("")
    lines += [f"- {tasks}: {text}" for tasks, text in protocols(reports)]
    return "\n".join(lines) + "\n"


def write_markdown(reports: list[ModelReport], path: Path) -> Path:
    """Write `markdown` atomically."""
    with atomic_file(path, "w") as handle:
        handle.write(markdown(reports))
    return path


def plot(reports: list[ModelReport], path: Path) -> Path:
    """A grouped bar chart of each task's headline score per model, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("--plot needs matplotlib: pip install 'cpt-embed[plot]'") from err
    tasks = [r.task for r in reports[0].results]
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(tasks) * len(reports) + 2), 4.5))
    x = np.arange(len(tasks))
    for i, report in enumerate(reports):
        scores = {r.task: r.score for r in report.results}
        ax.bar(x + i * width, [scores.get(t, 0.0) for t in tasks], width, label=report.model)
    ax.set_xticks(x + width * (len(reports) - 1) / 2, tasks, rotation=60, ha="right")
    ax.set_ylabel("score x 100 (headline metric)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return path
