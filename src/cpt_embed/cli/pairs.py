"""`cpt pairs code` and `cpt pairs text`: mine unlabeled positive pairs into shards."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cpt_embed.cli.common import (
    BatchSizeOption,
    DeviceOption,
    DtypeOpt,
    DtypeOption,
    err_console,
    quiet_transformers,
    user_errors,
)

app = typer.Typer(
    help="Mine unlabeled positive pairs: neighbouring passages of text, or (docstring, code).",
    no_args_is_help=True,
)


class ShardFormat(StrEnum):
    jsonl_gz = "jsonl.gz"
    jsonl = "jsonl"
    parquet = "parquet"


SourcesArg = Annotated[list[Path], typer.Argument(help="Files and folders to mine.")]
OutOption = Annotated[
    Path, typer.Option("--output", "-o", help="Output folder: pair shards + manifest.json.")
]
FormatOption = Annotated[ShardFormat, typer.Option("--format", help="Shard file format.")]
ShardOption = Annotated[int, typer.Option(min=1, help="Pairs per shard file.")]
LimitOption = Annotated[int | None, typer.Option(min=1, help="Stop after this many pairs.")]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Go on from the shards already in --output.")
]
ExcludeOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--exclude",
        help="Evaluation set whose items must not become pairs (BEIR "
        "folder, .jsonl, .tsv); repeatable.",
    ),
]
EvalOption = Annotated[
    bool,
    typer.Option(
        "--exclude-eval/--no-exclude-eval",
        help="Exclude the evaluation sets of ../shared/data when present.",
    ),
]


def _eval_data_dir():
    from cpt_embed.errors import InputError
    from cpt_embed.eval.data import find_data_dir

    try:
        return find_data_dir()
    except InputError:
        return None


def _print_mining(report) -> None:
    """The counts of a mining run as a table on stderr."""
    from rich.table import Table

    table = Table(title=f"pairs in {report.out_dir}")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key in sorted(report.counts):
        table.add_row(key, f"{report.counts[key]:,}")
    table.add_section()
    rate = report.units / report.seconds if report.seconds else 0.0
    table.add_row("pairs written", f"{report.pairs:,}", style="bold")
    table.add_row("inputs this run", f"{report.units:,} ({rate:,.1f}/s)")
    if report.resumed_from:
        table.add_row("resumed after input", f"{report.resumed_from:,}")
    table.add_row("time", f"{report.seconds:,.1f} s")
    table.add_row("peak RSS", f"{report.peak_rss_mb:,.0f} MiB")
    err_console.print(table)


@app.command("code")
@user_errors
def pairs_code(
    sources: SourcesArg,
    output: OutOption,
    fmt: FormatOption = ShardFormat.jsonl_gz,
    shard_size: ShardOption = 50_000,
    limit: LimitOption = None,
    resume: ResumeOption = False,
    languages: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of: python, javascript, "
            "typescript, tsx, go, java, ruby, php, rust."
        ),
    ] = None,
    max_file_bytes: Annotated[int, typer.Option(min=1, help="Skip larger files.")] = 1_000_000,
    min_doc_tokens: Annotated[int, typer.Option(min=0)] = 3,
    max_doc_tokens: Annotated[int, typer.Option(min=1)] = 256,
    min_code_lines: Annotated[int, typer.Option(min=0)] = 3,
    repo: Annotated[
        str | None,
        typer.Option(help="Repository name for every pair (default: the nearest project folder)."),
    ] = None,
    exclude: ExcludeOption = None,
    exclude_eval: EvalOption = True,
) -> None:
    """(docstring summary, code without docstring) pairs from source trees, parsed with
    tree-sitter; .gitignore respected, vendor/build/test folders and test functions skipped."""
    from cpt_embed.data.code_pairs import LANGUAGES, CodeFilter
    from cpt_embed.data.mine import code_exclusions, mine_code
    from cpt_embed.data.sources import check_code_sources
    from cpt_embed.errors import InputError
    from cpt_embed.eval.held_out import held_out_code, held_out_code_sets

    chosen = [x.strip() for x in languages.split(",")] if languages else None
    unknown = [x for x in chosen or [] if x not in LANGUAGES]
    if unknown:
        raise InputError(f"unknown language {unknown[0]!r}; use {', '.join(LANGUAGES)}")
    check_code_sources(sources, chosen)
    sets: list[tuple[Path, str | None]] = [(p, None) for p in exclude or []]
    if exclude_eval:
        sets += held_out_code_sets(_eval_data_dir())
    held_out = code_exclusions(held_out_code(sets))
    report = mine_code(
        sources,
        output,
        fmt=fmt.value,
        shard_size=shard_size,
        limit=limit,
        resume=resume,
        languages=chosen,
        max_file_bytes=max_file_bytes,
        repo=repo,
        exclusions=held_out,
        code_filter=CodeFilter(min_doc_tokens, max_doc_tokens, min_code_lines),
    )
    _print_mining(report)


@app.command("text")
@user_errors
def pairs_text(
    sources: SourcesArg,
    output: OutOption,
    fmt: FormatOption = ShardFormat.jsonl_gz,
    shard_size: ShardOption = 50_000,
    limit: LimitOption = None,
    resume: ResumeOption = False,
    field: Annotated[str, typer.Option(help="Text field of .jsonl/.parquet records.")] = "text",
    id_field: Annotated[str | None, typer.Option(help="Document id field.")] = None,
    tokenizer: Annotated[
        str, typer.Option(help="Model whose tokenizer measures passages.")
    ] = "default",
    min_tokens: Annotated[int, typer.Option(min=1, help="Shortest passage kept.")] = 16,
    max_tokens: Annotated[int, typer.Option(min=8, help="Longest passage.")] = 128,
    window: Annotated[int, typer.Option(min=1, help="Pair passage i with i + window.")] = 1,
    stride: Annotated[int, typer.Option(min=1, help="Passages between pair starts.")] = 2,
    max_pairs_per_doc: Annotated[int, typer.Option(min=0, help="0 = no cap.")] = 8,
    near_duplicate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="MinHash Jaccard threshold.")
    ] = 0.8,
    min_prose: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Least share of letters and spaces.")
    ] = 0.75,
    seed: Annotated[int, typer.Option(help="Seed of the per-document pair sampling.")] = 0,
    exclude: ExcludeOption = None,
    exclude_eval: EvalOption = True,
) -> None:
    """Neighbouring-passage pairs from .txt/.md/.rst files, .jsonl or .parquet records
    (optionally .gz); documents split on paragraph and sentence boundaries."""
    from cpt_embed.data.mine import mine_text, text_exclusions
    from cpt_embed.data.sources import check_text_sources
    from cpt_embed.data.text_pairs import TextFilter
    from cpt_embed.eval.held_out import held_out_text_sets, held_out_texts
    from cpt_embed.model.resolve import resolve_model

    check_text_sources(sources, field, output)
    quiet_transformers()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))

    def count_tokens(texts: list[str]) -> list[int]:
        ids = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    sets = list(exclude or [])
    if exclude_eval:
        sets += held_out_text_sets(_eval_data_dir())
    report = mine_text(
        sources,
        output,
        count_tokens=count_tokens,
        fmt=fmt.value,
        shard_size=shard_size,
        limit=limit,
        resume=resume,
        field_name=field,
        id_field=id_field,
        max_tokens=max_tokens,
        window=window,
        stride=stride,
        max_pairs_per_doc=max_pairs_per_doc,
        seed=seed,
        tokenizer_name=tokenizer,
        text_filter=TextFilter(
            min_tokens=min_tokens, min_prose=min_prose, near_duplicate=near_duplicate
        ),
        exclusions=text_exclusions(held_out_texts(sets)),
    )
    _print_mining(report)


PairsArg = Annotated[Path, typer.Argument(help="Pairs folder (or file) to curate.")]
CuratedOption = Annotated[
    Path, typer.Option("--output", "-o", help="Output folder: curated pair shards + manifest.")
]
GroupByOption = Annotated[
    str, typer.Option(help="Record field that groups pairs (pairs without it share a group).")
]
CurateModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Model that scores the pairs: `default`, a folder...")
]
CurateLengthOption = Annotated[
    int | None, typer.Option(min=8, help="Tokens per text (default: the model's).")
]


def _curation(model, max_length, batch_size, dtype, device, fmt, shard_size, resume):
    """The settings both curation commands share, from their options."""
    from cpt_embed.curate.steps import Curation

    return Curation(
        model, max_length, batch_size, dtype.value, device, fmt.value, shard_size, resume
    )


def _print_curation(report, title: str) -> None:
    """Kept and dropped pairs, in total and for the largest groups, as a table on stderr."""
    from rich.table import Table

    table = Table(title=f"{title}: {report.out_dir}")
    for name in ("group", "kept", "dropped", "kept %"):
        table.add_column(name, justify="left" if name == "group" else "right")
    groups = sorted(report.groups.items(), key=lambda g: -(g[1].kept + g[1].dropped))
    for name, counts in groups[:15]:
        total = counts.kept + counts.dropped
        share = f"{100 * counts.kept / total:.1f}"
        table.add_row(name or "(no group)", f"{counts.kept:,}", f"{counts.dropped:,}", share)
    if len(groups) > 15:
        table.add_row(f"... {len(groups) - 15:,} more groups (curation.json)", "", "", "")
    table.add_section()
    total = report.kept + report.dropped
    share = f"{100 * report.kept / max(total, 1):.1f}"
    table.add_row("all", f"{report.kept:,}", f"{report.dropped:,}", share, style="bold")
    err_console.print(table)
    err_console.print(f"{report.seconds:,.1f} s", highlight=False)


@app.command("filter")
@user_errors
def pairs_filter(
    pairs: PairsArg,
    output: CuratedOption,
    model: CurateModelOption = "default",
    top_k: Annotated[int, typer.Option(min=1, help="Keep a pair when y ranks in this top.")] = 2,
    pool: Annotated[int, typer.Option(min=2, help="Documents y competes with.")] = 1000,
    group_by: GroupByOption = "repo",
    seed: Annotated[int, typer.Option(help="Seed of the split into pools.")] = 0,
    max_length: CurateLengthOption = None,
    batch_size: BatchSizeOption = 128,
    dtype: DtypeOpt = DtypeOption.auto,
    device: DeviceOption = None,
    fmt: FormatOption = ShardFormat.jsonl_gz,
    shard_size: ShardOption = 50_000,
    resume: ResumeOption = False,
) -> None:
    """Consistency filtering: keep a pair when the model ranks its y in the top k for its x
    among the documents of its group (repository), as E5 and CoRNStack filter."""
    from cpt_embed.curate.steps import filter_pairs

    quiet_transformers()
    curation = _curation(model, max_length, batch_size, dtype, device, fmt, shard_size, resume)
    report = filter_pairs(
        pairs, output, curation, top_k=top_k, pool=pool, group_by=group_by, seed=seed
    )
    _print_curation(report, "consistency filter")


@app.command("negatives")
@user_errors
def pairs_negatives(
    pairs: PairsArg,
    output: CuratedOption,
    model: CurateModelOption = "default",
    num: Annotated[int, typer.Option(min=1, help="Hard negatives per pair.")] = 7,
    rank_range: Annotated[
        str, typer.Option(help="Ranks the negatives come from, FIRST-LAST (1 = closest).")
    ] = "10-100",
    margin: Annotated[
        float,
        typer.Option(help="Skip candidates scored >= margin x the positive's score."),
    ] = 0.95,
    sampling: Annotated[str, typer.Option(help="top (closest first) or random.")] = "top",
    corpus: Annotated[
        Path | None,
        typer.Option(help="Candidate documents (.txt/.jsonl/.parquet; default: the pairs' y)."),
    ] = None,
    corpus_field: Annotated[str, typer.Option(help="Text field of a .jsonl/.parquet corpus.")] = (
        "text"
    ),
    field: Annotated[str, typer.Option(help="Field written with the negatives.")] = "negatives",
    seed: Annotated[int, typer.Option(help="Seed of --sampling random.")] = 0,
    max_length: CurateLengthOption = None,
    batch_size: BatchSizeOption = 128,
    dtype: DtypeOpt = DtypeOption.auto,
    device: DeviceOption = None,
    fmt: FormatOption = ShardFormat.jsonl_gz,
    shard_size: ShardOption = 50_000,
    resume: ResumeOption = False,
) -> None:
    """Hard negatives mined with FAISS, likely false negatives skipped; `cpt train
    --hard-negatives FIELD` trains on them. Pairs with too few candidates are left out."""
    from cpt_embed.curate.negatives import NegativeSettings, parse_rank_range
    from cpt_embed.curate.steps import add_negatives

    quiet_transformers()
    first, last = parse_rank_range(rank_range)
    settings = NegativeSettings(num, first, last, margin, sampling, seed)
    curation = _curation(model, max_length, batch_size, dtype, device, fmt, shard_size, resume)
    report = add_negatives(
        pairs,
        output,
        curation,
        settings=settings,
        corpus=corpus,
        corpus_field=corpus_field,
        field=field,
    )
    _print_curation(report, f"{num} hard negatives per pair")
