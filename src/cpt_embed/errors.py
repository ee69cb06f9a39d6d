"""Errors caused by what the user passed in; the CLI prints them as one line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class CptError(Exception):
    """Base of errors whose message names the bad input and the fix."""


class InputError(CptError, ValueError):
    """An input file or value cannot be used as given."""


def missing_path(path: str | os.PathLike, what: str = "file or folder") -> InputError:
    """The error for a path that does not exist: `no such <what>`, or for a symlink that
    leads nowhere (a missing target or a loop of links), that, since `ls` shows it."""
    if os.path.islink(path):
        return InputError(
            f"{os.fspath(path)}: a symlink to nothing (its target is missing, or it is a "
            f"loop of links); point it at a real {what}"
        )
    return InputError(f"{os.fspath(path)}: no such {what}")


def first_line(err: BaseException) -> str:
    """A library's error message cut to its first line (some run to several)."""
    return str(err).strip().split("\n", 1)[0] or type(err).__name__


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Errors from reading a text file (not UTF-8, unreadable) as one line naming it."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise InputError(
            f"{os.fspath(path)}: not UTF-8 ({err.reason}); convert it to UTF-8"
        ) from None
    except OSError as err:
        raise InputError(f"{os.fspath(path)}: cannot read ({err.strerror or err})") from None


@contextmanager
def unreadable(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn a failure to parse a model's files into one line naming the folder."""
    try:
        yield
    except Exception as err:  # transformers, tokenizers and safetensors raise many kinds
        raise InputError(
            f"{os.fspath(folder)}: cannot read {what} ({first_line(err)[:200]}); re-save or "
            "reinstall the model"
        ) from err
