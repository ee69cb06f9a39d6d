"""The sources of a mining run, checked before any work: each exists, can be read, and is
of a kind `cpt pairs code` or `cpt pairs text` mines. A wrong path is then found before
the sources ahead of it were mined and before any output is written."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cpt_embed.data.code_pairs import LANGUAGES, language_of
from cpt_embed.data.documents import PLAIN, RECORDS, corpus_files, corpus_kind, documents_of
from cpt_embed.data.files import is_stream
from cpt_embed.data.walk import walk_files
from cpt_embed.errors import InputError, missing_path

CORPUS_KINDS = ", ".join(PLAIN + RECORDS)


def _readable(source: Path) -> None:
    """`source` exists and is a file or folder that can be read, or a pipe (read once, as
    mining goes: a probe would take its bytes)."""
    if not source.exists():
        raise missing_path(source)
    if is_stream(source):
        return
    if not (source.is_file() or source.is_dir()):
        raise InputError(f"{source}: neither a file nor a folder; pass files or folders to mine")
    try:
        if source.is_dir():
            with os.scandir(source) as entries:
                next(entries, None)
        else:
            with open(source, "rb") as handle:
                handle.read(1)
    except OSError as err:
        raise InputError(
            f"{source}: cannot read ({err.strerror or err}); check its permissions"
        ) from None


def check_code_sources(
    sources: Sequence[str | os.PathLike], languages: Sequence[str] | None = None
) -> None:
    """Refuse a source of `cpt pairs code` that is missing, unreadable, or neither a source
    file of `languages` (default: all) nor a folder holding one (test, vendor and build
    folders and .gitignore'd files left out, as mining leaves them)."""
    wanted = list(languages or LANGUAGES)
    names = ", ".join(wanted)
    for source in map(Path, sources):
        _readable(source)
        if any(language_of(found.path) in wanted for found in walk_files(source)):
            continue
        if not source.is_dir():
            raise InputError(
                f"{source}: not a source file of {names} (judged by its suffix); pass "
                "source files or folders of code"
            )
        raise InputError(
            f"{source}: no source files of {names} below it (test, vendor and build folders "
            "and .gitignore'd files are left out); pass a folder of code"
        )


def check_text_sources(
    sources: Sequence[str | os.PathLike],
    field: str = "text",
    out_dir: str | os.PathLike | None = None,
    max_bytes: int = 50_000_000,
) -> None:
    """Refuse a source of `cpt pairs text` that is missing or unreadable, a folder without
    corpus files or holding `out_dir` (the walk would read the pairs being written), or a
    file that is no corpus file or yields no text (no `field`, not UTF-8, empty...)."""
    for source in map(Path, sources):
        _readable(source)
        if not source.is_dir():
            if corpus_kind(source) is None:
                raise InputError(
                    f"{source}: not a corpus file; pass {CORPUS_KINDS} files (optionally "
                    ".gz) or folders of them"
                )
            if not is_stream(source):  # a pipe is read once, by the mining
                _check_documents(source, field, max_bytes)
            continue
        if out_dir is not None:
            out, root = Path(out_dir).resolve(), source.resolve()
            if out == root or root in out.parents:
                raise InputError(f"{out_dir}: the output folder must lie outside source {source}")
        if not any(corpus_kind(found.path) for found in corpus_files([source])):
            raise InputError(
                f"{source}: no corpus files below it ({CORPUS_KINDS}, optionally .gz); "
                "pass a folder of texts"
            )


def _check_documents(source: Path, field: str, max_bytes: int) -> None:
    """A corpus file given as a source yields a document with text, read no further (a
    Parquet file: its schema has the `field` column)."""
    if corpus_kind(source) == ".parquet":
        import pyarrow.parquet as pq

        try:
            columns = pq.read_schema(source).names
        except Exception:  # pyarrow raises several types for damaged files
            raise InputError(f"{source}: cannot be read (damaged or truncated)") from None
        if field not in columns:
            raise InputError(
                f"{source}: no column {field!r} (columns: {', '.join(columns)}); pass --field NAME"
            )
        return
    counts: Counter = Counter()
    documents = documents_of(source, source.name, field, None, counts, max_bytes)
    with contextlib.closing(documents):
        if any(document.text.strip() for document in documents):
            return
    reasons = {
        "record_unreadable": f"no record holds a string field {field!r} (each line must be "
        "a JSON object); pass --field NAME or fix the file",
        "file_unreadable": "cannot be read (damaged or truncated)",
        "file_not_utf8": "is not UTF-8 text; convert it to UTF-8",
        "file_binary": "holds NUL bytes, so it is no text file; pass text",
        "file_too_large": f"is larger than {max_bytes:,} bytes, the most mined; split it",
        "record_too_large": f"every record is larger than {max_bytes:,} bytes; split them",
    }
    reason = next((text for key, text in reasons.items() if counts[key]), None)
    raise InputError(f"{source}: {reason or 'holds no text; pass a file with texts'}")
