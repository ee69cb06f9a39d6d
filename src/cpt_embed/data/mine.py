"""`cpt pairs`: stream inputs through a pair extractor into shards, resumable, with counts."""

from __future__ import annotations

import os
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
    LANGUAGES,
    CodeFilter,
    extract_functions,
    language_of,
    normalized_hash,
    pairs_from_source,
)
from cpt_embed.data.documents import corpus_files, documents_of, read_text_file
from cpt_embed.data.shards import ShardWriter
from cpt_embed.data.sources import check_code_sources, check_text_sources
from cpt_embed.data.text_pairs import PassageSplitter, TextFilter, neighbour_pairs
from cpt_embed.data.walk import Found, walk_files
from cpt_embed.errors import InputError

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
# Folders of installed packages: each entry below one is a repository of its own.
ENVIRONMENT_DIRS = frozenset({"site-packages", "dist-packages"})


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


def text_exclusions(texts: Iterable[str]) -> set[str]:
    """Normalised hashes of held-out texts (those of evaluation sets): text pairs holding
    one of them are dropped."""
    return {normalized_hash(text) for text in texts}


def code_exclusions(items: Iterable[tuple[str, str]]) -> set[str]:
    """Keys of held-out (language, text) items: each text whole, and each function found in
    it without its docstring, as our pairs store code (evaluation sets such as CoSQA keep
    the docstring)."""
    keys: set[str] = set()
    for language, text in items:
        keys.add(normalized_hash(text))
        if language in LANGUAGES:
            for function in extract_functions(text.encode("utf-8"), language)[0]:
                keys.add(normalized_hash(function.code))
    return keys


@cache
def _project_root(directory: Path, root: Path) -> Path | None:
    if any((directory / marker).exists() for marker in PROJECT_MARKERS):
        return directory
    if directory == root or directory.parent == directory:
        return None
    return _project_root(directory.parent, root)


@cache
def _root_parts(root: Path) -> tuple[str, ...]:
    return Path(os.path.abspath(root)).parts


def _installed_package(found: Found) -> str | None:
    """`site-packages/<package>` for a file in an environment folder (the outermost
    site-packages or dist-packages on its absolute path), else None; a single-module
    distribution (six.py) loses its suffix."""
    parts = (*_root_parts(found.root), *found.relative.split("/"))
    for i, part in enumerate(parts[:-1]):
        if part in ENVIRONMENT_DIRS:
            entry = parts[i + 1]
            if i + 2 == len(parts):  # the file itself lies in the environment folder
                entry = entry.split(".", 1)[0]
            return f"{part}/{entry}"
    return None


def repo_name(found: Found, fixed: str | None = None) -> str:
    """The repository a file belongs to: `fixed`; else, for a file in an environment
    folder (site-packages or dist-packages, below the mined root or above it), that
    folder's name + the installed package or module (`site-packages/numpy`,
    `site-packages/six` for six.py), whatever project markers lie above or inside it;
    else the nearest folder with a project marker (pyproject.toml, package.json, go.mod,
    ...); else the source root + the top folder below it."""
    if fixed:
        return fixed
    package = _installed_package(found)
    if package is not None:
        return package
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
    """(docstring summary, code) pairs from source trees into shards under `out_dir`;
    every source is checked before any work."""
    check_code_sources(sources, languages)
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
            for found in walk_files(Path(source), counts=counts):
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
    """Neighbouring-passage pairs from text corpora into shards under `out_dir`; every
    source is checked before any work."""
    if window < 1 or stride < 1:
        raise InputError("--window and --stride must be >= 1")
    check_text_sources(sources, field_name, out_dir, max_file_bytes)
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
        for found in corpus_files(sources, counts):
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
