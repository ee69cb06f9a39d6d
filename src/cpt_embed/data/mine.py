"""`cpt pairs`: stream inputs through a pair extractor into shards, resumable, with counts."""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from cpt_embed.data.code_pairs import (
    CodeFilter,
    held_out_keys,
    language_of,
    normalized_hash,
    pairs_from_source,
)
from cpt_embed.data.documents import corpus_files, documents_of, read_text_file
from cpt_embed.data.shards import ShardWriter, json_records
from cpt_embed.data.text_pairs import PassageSplitter, TextFilter, neighbour_pairs
from cpt_embed.data.walk import Found, walk_files
from cpt_embed.errors import InputError, missing_path, reading

T = TypeVar("T")
PROJECT_MARKERS = (
    ".git",
    "pyproject.toml",
    "setup.py",
    "package.json",
    "go.mod",
    "Cargo.toml",
    "pom.xml",
    "build.gradle",
    "Gemfile",
    "composer.json",
)
# The code-search sets of ../shared/data and their language.
EVAL_CODE_SETS = {"code_search/cosqa": "python", "code_search/codesearchnet_ruby": "ruby"}


@dataclass
class MiningReport:
    """What a run produced: pairs written, counts by reason, speed and peak memory."""

    out_dir: Path
    pairs: int
    units: int
    counts: dict[str, int]
    seconds: float
    peak_rss_mb: float
    resumed_from: int = 0
    by_language: dict[str, int] = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(
    units: Iterator[T],
    process: Callable[[T, int], Iterable[dict]],
    writer: ShardWriter,
    counts: Counter,
    restore: Callable[[dict], None],
    *,
    limit: int | None,
    unit_name: str,
    show_progress: bool,
) -> MiningReport:
    started = time.perf_counter()
    resumed_from = writer.position
    for record in writer.written():
        restore(record)
    position = 0
    bar = tqdm(desc="mining", unit=unit_name, disable=not show_progress, dynamic_ncols=True)
    with bar:
        for position, unit in enumerate(units, start=1):
            if position <= resumed_from:
                if position == resumed_from:  # skipping may have counted; take the saved
                    counts.clear()
                    counts.update(writer.counts)
                continue
            for record in process(unit, position):
                writer.add(record)
                if limit and writer.pairs >= limit:
                    break  # before the generator counts a record it will not write
            bar.update(1)
            bar.set_postfix(pairs=writer.pairs, refresh=False)
            if limit and writer.pairs >= limit:
                break
            writer.checkpoint(position, counts)
    writer.close(position, counts)
    by_language = {k.removeprefix("pairs_"): v for k, v in counts.items() if k.startswith("pairs_")}
    return MiningReport(
        writer.out_dir,
        writer.pairs,
        position - resumed_from,
        dict(counts),
        time.perf_counter() - started,
        peak_rss_mb(),
        resumed_from,
        by_language,
    )


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file; an error names the file."""
    with reading(path), open(path, encoding="utf-8-sig") as handle:
        yield from enumerate(handle, start=1)


def _json_records(path: Path) -> Iterator[dict]:
    """The objects of a JSONL file; an error names the file and line."""
    return json_records(_text_lines(path), path)


def _beir_texts(folder: Path) -> Iterator[str]:
    for name in ("corpus.jsonl", "queries.jsonl"):
        path = folder / name
        if path.is_file():
            for record in _json_records(path):
                title, text = record.get("title"), record.get("text")
                parts = [t for t in (title, text) if isinstance(t, str) and t]
                yield " ".join(parts)
                if len(parts) == 2:
                    yield text


def _exclusion_texts(path: Path) -> Iterator[str]:
    """Texts of an evaluation set: a BEIR folder, a JSONL file (text, text1, text2 fields),
    a TSV of sentence pairs, or a folder holding any of these."""
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        yield from _beir_texts(path)
    elif path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_dir() and child.name != "qrels" or child.suffix in (".jsonl", ".tsv"):
                yield from _exclusion_texts(child)
    elif path.suffix == ".jsonl":
        for record in _json_records(path):
            yield from (
                record[k] for k in ("text", "text1", "text2") if isinstance(record.get(k), str)
            )
    elif path.suffix == ".tsv":
        for _, line in _text_lines(path):
            yield from line.rstrip("\n").split("\t")[1:]
    else:
        raise InputError(f"{path}: --exclude takes a BEIR folder, .jsonl, .tsv or a folder")


def text_exclusions(paths: list[Path]) -> set[str]:
    """Normalised hashes of every text in the given evaluation sets."""
    return {normalized_hash(t) for p in paths for t in _exclusion_texts(p)}


def code_exclusions(paths: list[tuple[Path, str | None]]) -> set[str]:
    """Keys of the code and queries of the given sets: whole texts, and each function
    without its docstring, as our pairs store code."""

    def items():
        for path, language in paths:
            for text in _exclusion_texts(path):
                yield language or "", text

    return held_out_keys(items)


def default_text_exclusions(data_dir: Path | None) -> list[Path]:
    """Every evaluation set of ../shared/data: STS and classification files, and each
    retrieval and code-search folder (read in the BEIR layout)."""
    if data_dir is None:
        return []
    return sorted(
        p
        for kind in ("sts", "classification", "retrieval", "code_search")
        if (data_dir / kind).is_dir()
        for p in (data_dir / kind).iterdir()
        if p.is_dir()
    )


def default_code_exclusions(data_dir: Path | None) -> list[tuple[Path, str]]:
    """The code-search sets of ../shared/data."""
    if data_dir is None:
        return []
    return [
        (data_dir / rel, lang) for rel, lang in EVAL_CODE_SETS.items() if (data_dir / rel).is_dir()
    ]


@cache
def _project_root(directory: Path, root: Path) -> Path | None:
    if any((directory / marker).exists() for marker in PROJECT_MARKERS):
        return directory
    if directory == root or directory.parent == directory:
        return None
    return _project_root(directory.parent, root)


def repo_name(found: Found, fixed: str | None = None) -> str:
    """The repository a file belongs to: `fixed`, else the nearest folder with a project
    marker (pyproject.toml, package.json, go.mod, ...), else the source root + the top
    folder below it (one package of site-packages, say)."""
    if fixed:
        return fixed
    project = _project_root(found.path.parent, found.root)
    if project == found.root:
        return found.root.name
    if project is not None:
        return f"{found.root.name}/{project.relative_to(found.root).as_posix()}"
    top = found.relative.split("/", 1)[0] if "/" in found.relative else ""
    return f"{found.root.name}/{top}" if top else found.root.name


def mine_code(
    sources: list[Path],
    out_dir: Path,
    *,
    fmt: str = "jsonl.gz",
    shard_size: int = 50_000,
    limit: int | None = None,
    resume: bool = False,
    languages: list[str] | None = None,
    max_file_bytes: int = 1_000_000,
    code_filter: CodeFilter | None = None,
    exclusions: set[str] | None = None,
    repo: str | None = None,
    show_progress: bool = True,
) -> MiningReport:
    """(docstring summary, code) pairs from source trees into shards under `out_dir`."""
    counts: Counter = Counter()
    code_filter = code_filter or CodeFilter()
    code_filter.counts = counts
    code_filter.held_out = exclusions or set()
    settings: dict[str, Any] = {
        "kind": "code",
        "sources": [str(s) for s in sources],
        "languages": languages,
        "max_file_bytes": max_file_bytes,
        "min_doc_tokens": code_filter.min_doc_tokens,
        "max_doc_tokens": code_filter.max_doc_tokens,
        "min_code_lines": code_filter.min_code_lines,
        "limit": limit,
        "repo": repo,
        "held_out_items": len(code_filter.held_out),
    }
    writer = ShardWriter(out_dir, fmt=fmt, shard_size=shard_size, settings=settings, resume=resume)

    def units() -> Iterator[tuple[Found, str]]:
        for source in sources:
            if not Path(source).exists():
                raise missing_path(source)
            for found in walk_files(Path(source)):
                language = language_of(found.path)
                if language and (not languages or language in languages):
                    yield found, language

    def process(unit: tuple[Found, str], position: int) -> Iterator[dict]:
        found, language = unit
        text = read_text_file(found.path, counts, max_file_bytes)
        if text is None:
            return
        counts["files_parsed"] += 1
        for record in pairs_from_source(
            text.encode("utf-8"), language, code_filter, repo_name(found, repo), found.relative
        ):
            counts[f"pairs_{language}"] += 1
            yield record

    def restore(record: dict) -> None:
        code_filter.seen.add(normalized_hash(record["y"]))

    return _run(
        units(),
        process,
        writer,
        counts,
        restore,
        limit=limit,
        unit_name="file",
        show_progress=show_progress,
    )


def mine_text(
    sources: list[Path],
    out_dir: Path,
    *,
    count_tokens: Callable[[list[str]], list[int]],
    fmt: str = "jsonl.gz",
    shard_size: int = 50_000,
    limit: int | None = None,
    resume: bool = False,
    field_name: str = "text",
    id_field: str | None = None,
    max_tokens: int = 128,
    window: int = 1,
    stride: int = 2,
    max_pairs_per_doc: int = 8,
    seed: int = 0,
    text_filter: TextFilter | None = None,
    exclusions: set[str] | None = None,
    max_file_bytes: int = 50_000_000,
    tokenizer_name: str = "",
    show_progress: bool = True,
) -> MiningReport:
    """Neighbouring-passage pairs from text corpora into shards under `out_dir`."""
    if window < 1 or stride < 1:
        raise InputError("--window and --stride must be >= 1")
    counts: Counter = Counter()
    text_filter = text_filter or TextFilter()
    text_filter.counts = counts
    text_filter.held_out = exclusions or set()
    splitter = PassageSplitter(count_tokens, max_tokens=max_tokens)
    settings: dict[str, Any] = {
        "kind": "text",
        "sources": [str(s) for s in sources],
        "field": field_name,
        "tokenizer": tokenizer_name,
        "min_tokens": text_filter.min_tokens,
        "max_tokens": max_tokens,
        "window": window,
        "stride": stride,
        "max_pairs_per_doc": max_pairs_per_doc,
        "seed": seed,
        "limit": limit,
        "min_prose": text_filter.min_prose,
        "near_duplicate": text_filter.near_duplicate,
        "held_out_items": len(text_filter.held_out),
    }
    writer = ShardWriter(out_dir, fmt=fmt, shard_size=shard_size, settings=settings, resume=resume)

    def units():
        for source in sources:
            if not Path(source).exists():
                raise missing_path(source)
        for found in corpus_files(sources):
            yield from documents_of(
                found.path, found.relative, field_name, id_field, counts, max_file_bytes
            )

    def process(document, position: int) -> Iterator[dict]:
        counts["documents"] += 1
        passages = splitter.split(document.text)
        rng = np.random.default_rng([seed, position])
        for i, j in neighbour_pairs(
            passages, window=window, stride=stride, max_pairs=max_pairs_per_doc, rng=rng
        ):
            (x, nx), (y, ny) = passages[i], passages[j]
            if text_filter.keep(x, nx, y, ny):
                yield {
                    "x": x,
                    "y": y,
                    "kind": "text",
                    "source": f"{document.id}#{i}",
                    "doc_id": document.id,
                    "passages": [i, j],
                }

    def restore(record: dict) -> None:
        text_filter.remember(record["x"], record["y"])

    return _run(
        units(),
        process,
        writer,
        counts,
        restore,
        limit=limit,
        unit_name="doc",
        show_progress=show_progress,
    )
