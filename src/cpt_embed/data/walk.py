"""Walking source trees and corpora: sorted (deterministic), .gitignore respected, vendored,
build and test folders skipped, symlinks never followed (no loops), and only regular files
yielded from folders (a FIFO would block its reader for ever)."""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

from cpt_embed.data.files import NOT_REGULAR, is_regular

# Folders CodeSearchNet-style mining leaves out: vendored, generated, tests, VCS.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "vendor",
        "vendors",
        "third_party",
        "thirdparty",
        "build",
        "dist",
        "target",
        "out",
        "__pycache__",
        ".tox",
        ".venv",
        "venv",
        ".mypy_cache",
        "test",
        "tests",
        "testing",
        "__tests__",
        "spec",
        "specs",
        "fixtures",
        "examples_test",
    }
)


def is_test_file(name: str) -> bool:
    """Test files by the usual naming of each language."""
    lower = name.lower()
    stem = lower.rsplit(".", 1)[0]
    return (
        stem.startswith("test_")
        or stem.endswith(("_test", "_tests", "_spec", ".test", ".spec"))
        or (name.endswith(".java") and stem.endswith("test"))
        or stem in ("conftest", "tests")
    )


@dataclass(frozen=True)
class Found:
    """A file found under `root`; `relative` is its path below the root, with / separators."""

    path: Path
    root: Path
    relative: str


def _ignored(path: Path, is_dir: bool, ignores: list[tuple[Path, pathspec.PathSpec]]) -> bool:
    for base, spec in ignores:
        relative = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        if spec.match_file(relative):
            return True
    return False


VCS_DIRS = frozenset({".git", ".hg", ".svn"})


def _gitignore_spec(lines: list[str]) -> pathspec.PathSpec:
    """The rules of a .gitignore file; like git, lines that are no valid pattern (a binary
    file's, say) are left out rather than failing the walk."""
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except (ValueError, re.error):
        valid = []
        for line in lines:
            with contextlib.suppress(ValueError, re.error):
                pathspec.GitIgnoreSpec.from_lines([line])
                valid.append(line)
        return pathspec.GitIgnoreSpec.from_lines(valid)


def walk_files(
    root: Path,
    *,
    skip_dirs: frozenset[str] = SKIP_DIRS,
    skip_tests: bool = True,
    gitignore: bool = True,
    counts: Counter | None = None,
) -> Iterator[Found]:
    """Regular files under `root` in sorted order; FIFOs, devices and sockets below it are
    left out (counted as NOT_REGULAR in `counts`), but a `root` that is no folder is
    yielded whatever it is (a pipe named on the command line is read as a stream).
    `gitignore=False` ignores .gitignore files."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        yield Found(root, root.parent, root.name)
        return
    ignores: list[tuple[Path, pathspec.PathSpec]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(directory)
        ignores = [(base, spec) for base, spec in ignores if here.is_relative_to(base)]
        ignore_file = here / ".gitignore"
        if gitignore and ignore_file.is_file():
            try:
                lines = ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
                ignores.append((here, _gitignore_spec(lines)))
            except OSError:
                pass

        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in skip_dirs
            and not (here / d).is_symlink()
            and not _ignored(here / d, True, ignores)
        )
        for name in sorted(filenames):
            path = here / name
            if path.is_symlink() or _ignored(path, False, ignores):
                continue
            if skip_tests and is_test_file(name):
                continue
            if not is_regular(path):
                if counts is not None:
                    counts[NOT_REGULAR] += 1
                continue
            yield Found(path, root, path.relative_to(root).as_posix())
