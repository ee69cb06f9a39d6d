"""The `cpt` command: parse, call the library, print."""

from __future__ import annotations

import functools
import os
import sys
import time
from datetime import UTC
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cpt_embed import __version__

app = typer.Typer(
    help="cpt-embed: text and code embeddings by contrastive pre-training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
# `cpt embed` compiles the model from this many texts on: below, start-up outweighs the gain.
COMPILE_FROM = 20_000


class SideOption(StrEnum):
    query = "query"
    document = "document"


class DtypeOption(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def _user_errors(func):
    """Print errors caused by the user's input as one line and exit 2, no traceback
    (set CPT_DEBUG=1 to see it)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from cpt_embed.atomic import no_space_error
        from cpt_embed.errors import CptError, first_line

        try:
            try:
                return func(*args, **kwargs)
            except OSError as err:  # a full disk: one line too
                full = no_space_error(err)
                if full is None:
                    raise
                raise full from err
        except (CptError, ValueError, TypeError, FileNotFoundError) as err:
            if os.environ.get("CPT_DEBUG"):
                raise
            from rich.markup import escape

            message = first_line(err)
            # escaped: rich would drop bracketed words such as cpt-embed[ray] as markup
            err_console.print(
                f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cpt-embed {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Load models whose weights are pickled (pytorch_model.bin): unpickling can "
            "run code, so only for files you trust. Without it only safetensors load.",
        ),
    ] = False,
) -> None:
    """Mine pairs, train, evaluate, embed, search and serve text and code embeddings.

    Every MODEL argument takes `default` (all-MiniLM-L6-v2), a local folder or a hub id.
    """
    if trust_pickle:  # read by Encoder.load, also in processes started from here
        from cpt_embed.model.encoder import TRUST_PICKLE_ENV

        os.environ[TRUST_PICKLE_ENV] = "1"


ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="`default`, a model folder or a hub id.")
]


class EngineOption(StrEnum):
    local = "local"
    ray = "ray"


@app.command()
@_user_errors
def embed(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...",
            help="Texts: .txt (one a line), .jsonl, .parquet (optionally .gz), or - "
            "for lines on stdin. With -o FOLDER: shard files, folders of them or globs.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Where to write: .npy (matrix) or .parquet (id, embedding); or a folder "
            "(no suffix): one .parquet per input shard, resumable (done shards are skipped).",
        ),
    ],
    model: ModelOption = "default",
    field: Annotated[str, typer.Option(help="Text field of .jsonl/.parquet records.")] = "text",
    id_field: Annotated[
        str | None,
        typer.Option(
            help="Id field of records (default: `id` or `_id` if present, "
            "else the line or row number)."
        ),
    ] = None,
    side: Annotated[
        SideOption,
        typer.Option(
            help="query for queries and symmetric tasks, document for texts to be searched."
        ),
    ] = SideOption.query,
    batch_size: Annotated[int, typer.Option(min=1, help="Most texts per forward pass.")] = 128,
    dtype: Annotated[
        DtypeOption,
        typer.Option(help="Compute precision; auto: bfloat16 where the hardware has it."),
    ] = DtypeOption.auto,
    max_length: Annotated[
        int | None, typer.Option(min=1, help="Tokens per text (default: the model's).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: auto).")
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help=f"torch.compile the model: ~30 s start-up, faster from then on on GPUs and "
            f"in float32; CPU bfloat16 runs faster eager (default: on from {COMPILE_FROM:,} "
            "texts; off with -o FOLDER).",
        ),
    ] = None,
    engine: Annotated[
        EngineOption,
        typer.Option(help="With -o FOLDER: local (this process) or ray (Ray Data actors)."),
    ] = EngineOption.local,
    actors: Annotated[
        int, typer.Option(min=1, help="--engine ray: actors, one Encoder (and GPU if any) each.")
    ] = 1,
    ray_address: Annotated[
        str | None,
        typer.Option(help="--engine ray: cluster (default: $RAY_ADDRESS, else a local one)."),
    ] = None,
) -> None:
    """Embed texts from a file or stdin into a .npy or .parquet file, or shards of a corpus
    into a folder of .parquet files (one per shard; a re-run skips the shards done)."""
    from cpt_embed.data.readers import read_texts
    from cpt_embed.data.vectors import check_vector_path, write_vectors
    from cpt_embed.errors import InputError
    from cpt_embed.model import Encoder
    from cpt_embed.model.embed_shards import EmbedSettings, embed_shards

    if output.is_dir() or not output.suffix:
        settings = EmbedSettings(model, side.value, max_length, dtype.value, field, id_field)
        _quiet_transformers()
        run = embed_shards(
            inputs,
            output,
            settings,
            engine=engine.value,
            batch_size=batch_size,
            device=device,
            compile=bool(compile),
            actors=actors,
            ray_address=ray_address,
            show_progress=True,
        )
        rate = run.texts / run.seconds if run.seconds > 0 else float("inf")
        err_console.print(
            f"embedded {run.texts:,} texts in {run.shards - run.skipped} shards to {output} "
            f"({run.skipped} done before; {rate:,.0f} texts/s)",
            highlight=False,
            soft_wrap=True,
        )
        return
    check_vector_path(output)
    if len(inputs) > 1 or Path(inputs[0]).is_dir():
        raise InputError(
            f"{output}: several inputs or a folder give one .parquet per shard; "
            "pass a folder (no suffix) as -o"
        )
    if engine is not EngineOption.local:
        raise InputError("--engine ray writes shards; pass a folder (no suffix) as -o")
    data = read_texts(inputs[0], field=field, id_field=id_field)
    _quiet_transformers()
    overrides = {"max_length": max_length} if max_length else {}
    encoder = Encoder.load(model, device=device, **overrides)
    start = time.perf_counter()
    vectors = encoder.encode(
        data.texts,
        side=side.value,
        batch_size=batch_size,
        dtype=dtype.value,
        compile=len(data.texts) >= COMPILE_FROM if compile is None else compile,
        show_progress=True,
    )
    seconds = time.perf_counter() - start
    write_vectors(output, vectors, data.ids)
    rate = len(data.texts) / seconds if seconds > 0 else float("inf")
    err_console.print(
        f"wrote {len(data.texts)} x {encoder.dim} embeddings to {output} ({rate:,.0f} texts/s)",
        highlight=False,
        soft_wrap=True,
    )


@app.command("eval")
@_user_errors
def eval_(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="Model to evaluate; repeat to compare side by side (deltas against the first).",
        ),
    ] = ["default"],  # noqa: B006
    tasks: Annotated[
        str,
        typer.Option(
            help="Tasks or groups, comma-separated: all, sts, classification, "
            "senteval, zeroshot, knn, retrieval, code, or names like stsb,scifact."
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
    batch_size: Annotated[int, typer.Option(min=1, help="Most texts per forward pass.")] = 128,
    dtype: Annotated[
        DtypeOption,
        typer.Option(help="Compute precision; auto: bfloat16 where the hardware has it."),
    ] = DtypeOption.auto,
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
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: auto).")
    ] = None,
) -> None:
    """Evaluate models on STS, linear-probe, zero-shot and k-NN classification, retrieval and
    code search; print a table, write a JSON report."""
    from datetime import datetime

    from cpt_embed.eval import evaluate, select_tasks
    from cpt_embed.eval.cache import default_cache_dir
    from cpt_embed.eval.data import find_data_dir
    from cpt_embed.eval.report import plot as draw_plot
    from cpt_embed.eval.report import print_table, write_json
    from cpt_embed.model import Encoder

    chosen = select_tasks(tasks)
    data_dir = find_data_dir(data)
    cache = None if no_cache else (cache_dir or default_cache_dir())
    _quiet_transformers()
    reports = []
    for name in model:
        err_console.print(f"[bold]{name}[/]: {len(chosen)} tasks on {data_dir}", highlight=False)

        def show(result):
            err_console.print(
                f"  {result.task:<20} {result.metric:<10} {result.score:7.2f}  "
                f"({result.seconds:.1f}s)",
                highlight=False,
            )

        subject = Encoder.load(name, device=device, max_length=max_length) if max_length else name
        report = evaluate(
            subject,
            chosen,
            data_dir,
            cache_dir=cache,
            batch_size=batch_size,
            dtype=dtype.value,
            compile=compile,
            symmetric_side=symmetric_side.value,
            seed=seed,
            device=device,
            on_result=show,
        )
        report.model = report.settings["model"] = name
        reports.append(report)
    print_table(reports, Console())
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = write_json(reports, output or Path("results") / f"eval-{stamp}.json")
    err_console.print(f"wrote {path}", highlight=False)
    if plot:
        err_console.print(f"wrote {draw_plot(reports, plot)}", highlight=False)
    if markdown:
        from cpt_embed.eval.report import markdown as to_markdown

        markdown.write_text(to_markdown(reports), encoding="utf-8")
        err_console.print(f"wrote {markdown}", highlight=False)


pairs_app = typer.Typer(
    help="Mine unlabeled positive pairs: neighbouring passages of text, or (docstring, code).",
    no_args_is_help=True,
)
app.add_typer(pairs_app, name="pairs")


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
    Console(stderr=True).print(table)


@pairs_app.command("code")
@_user_errors
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
    from cpt_embed.data.mine import code_exclusions, default_code_exclusions, mine_code
    from cpt_embed.errors import InputError

    chosen = [x.strip() for x in languages.split(",")] if languages else None
    unknown = [x for x in chosen or [] if x not in LANGUAGES]
    if unknown:
        raise InputError(f"unknown language {unknown[0]!r}; use {', '.join(LANGUAGES)}")
    sets = [(p, None) for p in exclude or []]
    if exclude_eval:
        sets += default_code_exclusions(_eval_data_dir())
    held_out = code_exclusions(sets)
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


@pairs_app.command("text")
@_user_errors
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
    from transformers import AutoTokenizer

    from cpt_embed.data.mine import default_text_exclusions, mine_text, text_exclusions
    from cpt_embed.data.text_pairs import TextFilter
    from cpt_embed.model.resolve import resolve_model

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))

    def count_tokens(texts: list[str]) -> list[int]:
        ids = tok(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    sets = list(exclude or [])
    if exclude_eval:
        sets += default_text_exclusions(_eval_data_dir())
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
        exclusions=text_exclusions(sets),
    )
    _print_mining(report)


@app.command()
@_user_errors
def train(
    config: Annotated[
        Path | None, typer.Argument(help="YAML file of settings; flags override it.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Start point.")] = None,
    data: Annotated[
        list[str] | None,
        typer.Option(help="Pair files, folders or globs; `path:weight` mixes sources. Repeatable."),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Run folder.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per step (global).")] = None,
    chunk_size: Annotated[
        int | None, typer.Option(help="Pairs per forward pass (gradient caching).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    warmup: Annotated[float | None, typer.Option(help="Warm-up fraction of the steps.")] = None,
    schedule: Annotated[str | None, typer.Option(help="linear, cosine or constant.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Max gradient norm.")] = None,
    tau_init: Annotated[float | None, typer.Option(help="Initial tau (scale exp(tau)).")] = None,
    tau_max: Annotated[float | None, typer.Option(help="Clamp of tau.")] = None,
    learn_tau: Annotated[bool | None, typer.Option("--learn-tau/--fixed-tau")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per text.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 or bfloat16 (autocast).")] = None,
    gradient_checkpointing: Annotated[
        bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    hard_negatives: Annotated[
        str | None, typer.Option(help="Field of each pair holding a list of hard negatives.")
    ] = None,
    shuffle_buffer: Annotated[int | None, typer.Option(help="Pairs in the shuffle buffer.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    keep_last: Annotated[int | None, typer.Option(help="Checkpoints kept.")] = None,
    log_every: Annotated[int | None, typer.Option(help="metrics.jsonl every N steps.")] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (0: never).")
    ] = None,
    eval_tasks: Annotated[
        str | None, typer.Option(help="Tasks of the periodic evaluation.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: auto).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Go on from the last checkpoint.")
    ] = False,
) -> None:
    """Contrastive pre-training of an Encoder on (x, y) pairs: symmetric in-batch loss with a
    learned temperature, large batches by gradient caching, several processes via torchrun."""
    values = {k: v for k, v in locals().items() if k not in ("config", "resume")}
    from cpt_embed.train.config import TrainConfig
    from cpt_embed.train.loop import train as run_training

    settings = TrainConfig.load(config, **values, resume=resume or None)
    _quiet_transformers()
    try:
        final = run_training(settings)
    except KeyboardInterrupt as stop:
        err_console.print(str(stop) or "interrupted", highlight=False)
        raise typer.Exit(130) from None
    if os.environ.get("RANK", "0") == "0":
        err_console.print(f"trained model: {final}", highlight=False)


index_app = typer.Typer(
    help="Build and update semantic search indexes over folders of code and documents.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")


class IndexKind(StrEnum):
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


def _print_index_report(report) -> None:
    err_console.print(
        f"{report.path}: {report.files:,} files, {report.chunks:,} chunks, "
        f"{report.embedded:,} embedded, {report.removed_files:,} files dropped "
        f"in {report.seconds:.1f}s",
        highlight=False,
    )
    skipped = []
    for key, n in sorted(report.counts.items()):
        unit, _, reason = key.partition("_")  # file_binary, record_unreadable ...
        if unit in ("file", "record") and n:
            skipped.append(f"{n:,} {unit}{'s' if n != 1 else ''} ({reason.replace('_', ' ')})")
    if skipped:
        err_console.print(f"skipped {', '.join(skipped)}", highlight=False, soft_wrap=True)


@index_app.command("build")
@_user_errors
def index_build(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Folders and files to index (with --from-embeddings: shards)."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index folder to write.")],
    model: ModelOption = "default",
    kind: Annotated[
        IndexKind,
        typer.Option(help="flat: exact search; hnsw or ivfpq: approximate, for millions."),
    ] = IndexKind.flat,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="gitignore-style pattern of paths to leave out; repeat it."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: auto).")] = None,
    from_embeddings: Annotated[
        bool,
        typer.Option(
            "--from-embeddings",
            help="PATHS are Parquet files (or folders of them) of id + embedding rows from "
            "`cpt embed -o NAME.parquet` with --model: index them, streamed, embedding nothing.",
        ),
    ] = False,
) -> None:
    """Chunk code per function and documents per section or paragraph, embed the chunks as
    documents, and write a FAISS + SQLite index (atomically); or, with --from-embeddings,
    index vectors embedded before (millions: stream them with --kind ivfpq)."""
    from cpt_embed.errors import InputError
    from cpt_embed.model import Encoder
    from cpt_embed.search.index import build_index, build_index_from_embeddings

    if from_embeddings and exclude:
        raise InputError("--exclude picks files to embed; it does not apply to --from-embeddings")
    _quiet_transformers()
    encoder = Encoder.load(model, device=device)
    if from_embeddings:
        report = build_index_from_embeddings(
            paths, output, encoder, model_name=model, kind=kind.value
        )
        err_console.print(
            f"{report.path}: {report.chunks:,} vectors from {report.files:,} shards "
            f"({kind.value}) in {report.seconds:.1f}s",
            highlight=False,
            soft_wrap=True,
        )
        return
    report = build_index(
        paths, output, encoder, model_name=model, kind=kind.value, exclude=exclude or []
    )
    _print_index_report(report)


@index_app.command("update")
@_user_errors
def index_update(
    index: Annotated[Path, typer.Argument(help="Index folder from `cpt index build`.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Default: the index's model.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: auto).")] = None,
) -> None:
    """Re-index the index's folders: embed changed and new files only, drop deleted ones."""
    from cpt_embed.model import Encoder
    from cpt_embed.search.index import read_manifest, update_index

    _quiet_transformers()
    name = model or read_manifest(index)["model"]
    encoder = Encoder.load(name, device=device)
    _print_index_report(update_index(index, encoder, name))


@app.command()
@_user_errors
def search(
    index: Annotated[Path, typer.Argument(help="Index folder from `cpt index build`.")],
    query: Annotated[str, typer.Argument(help="What to look for, in plain language.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Hits to show.")] = 10,
    lang: Annotated[
        str | None, typer.Option(help="Only this language: python/py, go, markdown, text...")
    ] = None,
    path_glob: Annotated[
        str | None, typer.Option(help="Only paths matching this glob, e.g. '*/json/*'.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list on stdout.")] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Default: the index's model.")
    ] = None,
) -> None:
    """Search an index: ranked chunks with score, path:line and a highlighted snippet."""
    import json as json_module

    from rich.text import Text

    from cpt_embed.model import Encoder
    from cpt_embed.search.index import Searcher, hits_to_dicts, read_manifest

    _quiet_transformers()
    name = model or read_manifest(index)["model"]
    searcher = Searcher(index, Encoder.load(name), name)
    hits = searcher.search(query, k, language=lang, path_glob=path_glob)
    if as_json:
        print(json_module.dumps(hits_to_dicts(hits), ensure_ascii=False, indent=1))
        return
    console = Console()
    if not hits:
        console.print("no hits")
    words = [w for w in query.split() if len(w) > 2]
    for rank, hit in enumerate(hits, 1):
        where = f":{hit.start_line}-{hit.end_line}" if hit.end_line else ""  # 0: a vector id
        title = f"{rank:>2}. {hit.score:.3f}  {hit.path}{where}"
        console.print(Text(title + (f"  {hit.name}" if hit.name else ""), style="bold"))
        lines = hit.text.splitlines()
        snippet = Text("\n".join("    " + line for line in lines[:8]))
        if len(lines) > 8:
            snippet.append(f"\n    ... {len(lines) - 8} more lines", style="dim")
        snippet.highlight_words(words, style="bold yellow", case_sensitive=False)
        console.print(snippet)


# How `cpt serve` has OpenMP threads wait between parallel regions unless the user says
# (OMP_WAIT_POLICY or GOMP_SPINCOUNT). By default they spin for 300,000 rounds before they
# sleep, taking the CPU the event loop needs between batches; passive threads (no spinning)
# must be woken for each of a forward pass's ~150 regions, which made encoding ~30% slower.
# 20,000 rounds bridge the gaps inside a forward pass and end soon after it: at 64 clients
# 1.06x and 1.38x the requests/s of passive threads in two runs (docs/benchmarks.md).
# glibc's mmap threshold, fixed at 1 MB here until ragged rows came in buckets of few
# sizes, is left alone: fixed, it mapped and faulted in every activation of 1 MB or more
# afresh (0.6x the valid requests/s under the abuse test, whose memory stays flat without
# it).
SERVER_ENV = {"GOMP_SPINCOUNT": "20000"}
OPENMP_WAITING = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _restart_with_server_env() -> None:
    """Re-run `cpt serve` with SERVER_ENV where the user has not set how OpenMP threads
    wait (it is read when torch starts, so it cannot be set later)."""
    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if words[:1] != ["serve"] or any(name in os.environ for name in OPENMP_WAITING):
        return
    env = dict(os.environ) | SERVER_ENV
    os.execve(sys.executable, [sys.executable, "-m", "cpt_embed.cli", *sys.argv[1:]], env)


@app.command()
@_user_errors
def serve(
    model: ModelOption = "default",
    index: Annotated[
        Path | None, typer.Option(help="Index folder to serve /v1/search and the page from.")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CPT_API_KEY",
            help="Require `Authorization: Bearer KEY` on /v1/* (or set $CPT_API_KEY).",
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens per micro-batch of concurrent requests.")
    ] = 16_384,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a micro-batch waits to fill.")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Texts waiting at most; beyond that requests get 503.")
    ] = 4096,
    max_body_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body in MiB; beyond: 413.")
    ] = 8.0,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds a request may take; beyond: 503.")
    ] = 60.0,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open connections at most; beyond: 503.")
    ] = 1024,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A web origin whose pages may call the API (repeat for more; default: none)."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: auto).")] = None,
) -> None:
    """Serve the model over HTTP: OpenAI-compatible POST /v1/embeddings, POST /v1/search,
    GET /health, GET /metrics, and a search page at /."""
    _restart_with_server_env()
    import uvicorn

    from cpt_embed.model import Encoder
    from cpt_embed.serve.app import create_app

    _quiet_transformers()
    encoder = Encoder.load(model, device=device)
    searcher = None
    if index is not None:
        from cpt_embed.search.index import Searcher

        searcher = Searcher(index, encoder, model)
    app_ = create_app(
        encoder,
        model,
        searcher=searcher,
        api_key=api_key,
        max_batch_tokens=max_batch_tokens,
        max_wait=max_wait_ms / 1000,
        max_queue=max_queue,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        timeout=timeout,
        cors_origins=cors_origin or (),
    )
    err_console.print(
        f"serving {model} on http://{host}:{port} (OpenAI base_url http://{host}:{port}/v1)",
        highlight=False,
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning", limit_concurrency=max_connections)


if __name__ == "__main__":
    sys.exit(app())
