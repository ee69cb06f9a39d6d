"""Reports of evaluation runs: a terminal table (side by side with deltas), JSON, a plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from cpt_embed.atomic import atomic_file, check_output_file
from cpt_embed.errors import InputError
from cpt_embed.eval.classification import SENTEVAL_7
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


def print_table(reports: list[ModelReport], console: Console) -> None:
    """One row per task (and per group average), one column per model, deltas vs the first."""
    side = reports[0].settings["symmetric_side"]
    table = Table(title=f"cpt eval (symmetric tasks on the {side} side; scores x 100)")
    for column in ("task", "group", "metric"):
        table.add_column(column)
    for i, report in enumerate(reports):
        table.add_column(f"[{i}] {report.model}", justify="right")
        if i:
            table.add_column(f"Δ [{i}]-[0]", justify="right")
    by_model = [{r.task: r for r in report.results} for report in reports]
    for result in reports[0].results:
        row = [result.task, result.group, result.metric]
        for i, results in enumerate(by_model):
            other = results.get(result.task)
            row.append(f"{other.score:.2f}" if other else "-")
            if i:
                row.append(_delta(other.score - result.score) if other else "-")
        table.add_row(*row)
        extras = {k: v for k, v in result.scores.items() if k != result.metric}
        for metric in extras:
            row = ["", "", metric]
            for i, results in enumerate(by_model):
                value = results[result.task].scores.get(metric)
                row.append(f"{value:.2f}")
                if i:
                    row.append(_delta(value - result.scores[metric]))
            table.add_row(*row, style="dim")
    table.add_section()
    model_averages = [averages(r) for r in reports]
    for name, value in model_averages[0].items():
        row = [name, "", "mean"]
        for i, avg in enumerate(model_averages):
            row.append(f"{avg.get(name, float('nan')):.2f}")
            if i:
                row.append(_delta(avg.get(name, float("nan")) - value))
        table.add_row(*row, style="bold")
    console.print(table)


def markdown(reports: list[ModelReport]) -> str:
    """A Markdown table of every score (one column per model), then the averages."""
    names = [r.model for r in reports]
    lines = [
        "| task | group | metric | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    by_model = [{r.task: r for r in report.results} for report in reports]
    for result in reports[0].results:
        for metric in [result.metric] + [m for m in result.scores if m != result.metric]:
            values = [
                f"{m[result.task].scores.get(metric, float('nan')):.2f}"
                if result.task in m
                else "-"
                for m in by_model
            ]
            task = result.task if metric == result.metric else ""
            group = result.group if metric == result.metric else ""
            lines.append(f"| {task} | {group} | {metric} | " + " | ".join(values) + " |")
    model_averages = [averages(r) for r in reports]
    for name in model_averages[0]:
        values = [f"{avg.get(name, float('nan')):.2f}" for avg in model_averages]
        lines.append(f"| **{name}** | | mean | " + " | ".join(values) + " |")
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
