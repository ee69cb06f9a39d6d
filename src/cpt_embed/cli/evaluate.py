"""`cpt eval`: models through the evaluation suite, side by side, into a table and a report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cpt_embed.cli.common import (
    BatchSizeOption,
    DeviceOption,
    DtypeOpt,
    DtypeOption,
    SideOption,
    err_console,
    quiet_transformers,
    say,
    user_errors,
)
from cpt_embed.errors import InputError


@user_errors
def eval_(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="Model to evaluate; repeat to compare side by side (deltas against the "
            "first). bm25: the lexical baseline (bm25s; English stemmer and stop words, "
            "identifiers split in code) on the retrieval and code tasks.",
        ),
    ] = ["default"],  # noqa: B006
    tasks: Annotated[
        str,
        typer.Option(
            help="Tasks or groups, comma-separated: all, sts, classification, "
            "senteval, zeroshot, knn, retrieval, code, names like stsb,scifact, or paths to "
            "folders of your own in a BEIR, classification or STS layout (named after the "
            "folder; an optional task.json declares kind, split, protocol)."
        ),
    ] = "all",
    data: Annotated[
        Path | None,
        typer.Option(help="Evaluation data dir (default: $CPT_DATA, else ../shared/data)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="JSON report (default: results/eval-<time>.json)."),
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw a PNG bar chart here.")] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="Also write the table as Markdown here.")
    ] = None,
    symmetric_side: Annotated[
        SideOption, typer.Option(help="Side for both texts of STS and classification.")
    ] = SideOption.query,
    batch_size: BatchSizeOption = 128,
    dtype: DtypeOpt = DtypeOption.auto,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Embedding cache (default: $CPT_CACHE/embeddings or "
            "~/.cache/cpt-embed/embeddings)."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Embed everything anew.")] = False,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model (~30 s start-up, faster from then on on GPUs and "
            "in float32; CPU bfloat16 runs faster eager).",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the CV splits and distractors.")] = 0,
    max_length: Annotated[
        int | None,
        typer.Option(
            min=8, help="Read only the first N tokens of each text (default: the model's own)."
        ),
    ] = None,
    device: DeviceOption = None,
    retriever: Annotated[
        str,
        typer.Option(
            help="How retrieval and code tasks rank documents, comma-separated for side by "
            "side: dense (the model), bm25, hybrid (both fused, the fusion chosen on "
            "development splits: docs/results.md).",
        ),
    ] = "dense",
) -> None:
    """Evaluate models on STS, linear-probe, zero-shot and k-NN classification, retrieval and
    code search; print a table, write a JSON report."""
    from cpt_embed.eval import select_tasks
    from cpt_embed.eval.cache import default_cache_dir
    from cpt_embed.eval.data import find_data_dir
    from cpt_embed.eval.report import check_outputs, print_table, write_json, write_markdown
    from cpt_embed.eval.report import plot as draw_plot
    from cpt_embed.eval.suite import (
        LEXICAL,
        LEXICAL_GROUPS,
        check_models,
        check_task_data,
        is_lexical,
        task_group,
    )

    chosen = select_tasks(tasks)
    built_in = any(isinstance(task, str) for task in chosen)
    data_dir = find_data_dir(data) if built_in or data else Path.cwd()
    check_task_data(chosen, data_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    report_path = output or Path("results") / f"eval-{stamp}.json"
    check_outputs(report_path, plot, markdown)
    check_models(model)
    retrievers = _retrievers(retriever)
    lexical_only = any(map(is_lexical, model)) or retrievers == [LEXICAL]
    if lexical_only and not any(task_group(t) in LEXICAL_GROUPS for t in chosen):
        raise InputError(
            "bm25 ranks documents, and none of --tasks is a retrieval or code task; "
            "add some (--tasks retrieval,code) or drop bm25"
        )
    runs = [
        (name, way) for name in model for way in ([LEXICAL] if is_lexical(name) else retrievers)
    ]
    settings = {
        "cache_dir": None if no_cache else (cache_dir or default_cache_dir()),
        "batch_size": batch_size,
        "dtype": dtype.value,
        "compile": compile,
        "symmetric_side": symmetric_side.value,
        "seed": seed,
        "device": device,
    }
    quiet_transformers()
    reports = [
        _evaluate_one(name, way, chosen, data_dir, max_length, settings) for name, way in runs
    ]
    print_table(reports, Console())
    say(f"wrote {write_json(reports, report_path)}")
    if plot:
        say(f"wrote {draw_plot(reports, plot)}")
    if markdown:
        say(f"wrote {write_markdown(reports, markdown)}")


def _retrievers(spec: str) -> list[str]:
    """The --retriever words, checked."""
    from cpt_embed.eval.suite import RETRIEVERS

    words = [w.strip().lower() for w in spec.split(",") if w.strip()]
    unknown = [w for w in words if w not in RETRIEVERS]
    if not words or unknown:
        raise InputError(
            f"--retriever {spec!r}: use {', '.join(RETRIEVERS)} (comma-separated for several)"
        )
    return list(dict.fromkeys(words))


def _evaluate_one(
    name: str,
    retriever: str,
    chosen: list,
    data_dir: Path,
    max_length: int | None,
    settings: dict,
):
    """One model with one retriever through the chosen tasks, each result printed as it
    lands; the report is named after both (`default [hybrid]`)."""
    from rich.markup import escape

    from cpt_embed.eval import evaluate
    from cpt_embed.eval.suite import LEXICAL_GROUPS, is_lexical, task_group
    from cpt_embed.model import Encoder  # torch: after every check of the command

    runs = [t for t in chosen if not is_lexical(name) or task_group(t) in LEXICAL_GROUPS]
    left = len(chosen) - len(runs)
    note = f" ({left} without retrieval left out: bm25 ranks documents)" if left else ""
    label = name if retriever == "dense" or is_lexical(name) else f"{name} [{retriever}]"
    err_console.print(
        f"[bold]{escape(label)}[/]: {len(runs)} tasks on {escape(str(data_dir))}{note}",
        highlight=False,
    )

    def show(result):
        say(f"  {result.task:<20} {result.metric:<10} {result.score:7.2f}  ({result.seconds:.1f}s)")

    reload = max_length and not is_lexical(name)
    device = settings["device"]
    subject = Encoder.load(name, device=device, max_length=max_length) if reload else name
    report = evaluate(subject, chosen, data_dir, on_result=show, retriever=retriever, **settings)
    report.model = report.settings["model"] = label
    return report
