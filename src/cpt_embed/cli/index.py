"""`cpt index build|update` and `cpt search`: semantic search over folders of code and
documents."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cpt_embed.cli.common import (
    DeviceOption,
    IndexModelOption,
    ModelOption,
    for_terminal,
    quiet_transformers,
    say,
    user_errors,
)

app = typer.Typer(
    help="Build and update semantic search indexes over folders of code and documents.",
    no_args_is_help=True,
)


class IndexKind(StrEnum):
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


class Precision(StrEnum):
    float32 = "float32"
    int8 = "int8"
    binary = "binary"


class SearchMode(StrEnum):
    hybrid = "hybrid"
    dense = "dense"
    lexical = "lexical"


def _print_index_report(report) -> None:
    """What a build or update did, and the files it skipped, by reason."""
    say(
        f"{report.path}: {report.files:,} files, {report.chunks:,} chunks, "
        f"{report.embedded:,} embedded, {report.removed_files:,} files dropped "
        f"in {report.seconds:.1f}s"
    )
    skipped = []
    for key, n in sorted(report.counts.items()):
        unit, _, reason = key.partition("_")  # file_binary, record_unreadable ...
        if unit in ("file", "record") and n:
            skipped.append(f"{n:,} {unit}{'s' if n != 1 else ''} ({reason.replace('_', ' ')})")
    if skipped:
        say(f"skipped {', '.join(skipped)}")


@app.command("build")
@user_errors
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
    precision: Annotated[
        Precision,
        typer.Option(
            help="The FAISS index's vectors (--kind flat): float32, or int8 (1/4 the bytes) or "
            "binary sign bits (1/32), whose top candidates are re-scored with the float vectors."
        ),
    ] = Precision.float32,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="gitignore-style pattern of paths to leave out; repeat it."),
    ] = None,
    device: DeviceOption = None,
    lexical: Annotated[
        bool,
        typer.Option(
            "--lexical/--no-lexical",
            help="Also index the chunks' words (BM25, identifiers split) for lexical and "
            "hybrid search.",
        ),
    ] = True,
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
    from cpt_embed.search.build import build_index, build_index_from_embeddings, check_build

    if from_embeddings and exclude:
        raise InputError("--exclude picks files to embed; it does not apply to --from-embeddings")
    check_build(
        paths, output, from_embeddings=from_embeddings, kind=kind.value, precision=precision.value
    )
    quiet_transformers()
    from cpt_embed.model import Encoder

    encoder = Encoder.load(model, device=device)
    if from_embeddings:
        report = build_index_from_embeddings(
            paths, output, encoder, model_name=model, kind=kind.value, precision=precision.value
        )
        say(
            f"{report.path}: {report.chunks:,} vectors from {report.files:,} shards "
            f"({kind.value}) in {report.seconds:.1f}s"
        )
        return
    report = build_index(
        paths,
        output,
        encoder,
        model_name=model,
        kind=kind.value,
        precision=precision.value,
        exclude=exclude or [],
        lexical=lexical,
    )
    _print_index_report(report)


@app.command("update")
@user_errors
def index_update(
    index: Annotated[Path, typer.Argument(help="Index folder from `cpt index build`.")],
    model: IndexModelOption = None,
    device: DeviceOption = None,
) -> None:
    """Re-index the index's folders: embed changed and new files only, drop deleted ones."""
    from cpt_embed.search.build import check_update, update_index

    manifest = check_update(index)
    quiet_transformers()
    from cpt_embed.model import Encoder

    name = model or manifest["model"]
    encoder = Encoder.load(name, device=device)
    _print_index_report(update_index(index, encoder, name))


@user_errors
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
    model: IndexModelOption = None,
    mode: Annotated[
        SearchMode | None,
        typer.Option(
            help="hybrid: dense and BM25 fused (the default where the index has both); "
            "dense: the vectors alone; lexical: BM25 alone."
        ),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Colour each hit's lines and tokens by their share of its similarity to the "
            "query (cpt explain; about 0.15 s a hit, the best 20 hits).",
        ),
    ] = False,
) -> None:
    """Search an index: ranked chunks with score, path:line and a highlighted snippet
    (control characters of files shown as escapes, such as \\x1b); --explain shows which
    lines and tokens of each hit carry its similarity."""
    import json as json_module

    from rich.text import Text

    from cpt_embed.cli.explain import show_hit
    from cpt_embed.search.explain import explain_hits
    from cpt_embed.search.query import Searcher, hits_to_dicts
    from cpt_embed.search.store import read_manifest

    manifest = read_manifest(index)
    quiet_transformers()
    from cpt_embed.model import Encoder
    from cpt_embed.model.runtime.devices import cpu_threads

    name = model or manifest["model"]
    searcher = Searcher(index, Encoder.load(name), name)
    with cpu_threads(1):  # one query: see embed/corpus.py's ONE_THREAD_CHARS
        hits = searcher.search(
            query, k, language=lang, path_glob=path_glob, mode=mode and mode.value
        )
    explanations = explain_hits(searcher.encoder, query, hits) if explain else None
    if as_json:  # JSON escapes C0 controls; DEL and C1 ones too, for a terminal
        text = json_module.dumps(hits_to_dicts(hits, explanations), ensure_ascii=False, indent=1)
        print(re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text))
        return
    console = Console()
    if not hits:
        console.print("no hits")
    words = [w for w in query.split() if len(w) > 2]
    for rank, hit in enumerate(hits, 1):
        where = f":{hit.start_line}-{hit.end_line}" if hit.end_line else ""  # 0: a vector id
        title = f"{rank:>2}. {hit.score:.3f}  {for_terminal(hit.path, one_line=True)}{where}"
        label = f"  {for_terminal(hit.name, one_line=True)}" if hit.name else ""
        console.print(Text(title + label, style="bold"))
        if explanations is not None and rank <= len(explanations):
            show_hit(console, explanations[rank - 1])
            continue
        lines = hit.text.splitlines()
        snippet = Text("\n".join("    " + for_terminal(line) for line in lines[:8]))
        if len(lines) > 8:
            snippet.append(f"\n    ... {len(lines) - 8} more lines", style="dim")
        snippet.highlight_words(words, style="bold yellow", case_sensitive=False)
        console.print(snippet)
