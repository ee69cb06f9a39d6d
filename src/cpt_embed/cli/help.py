"""How `cpt ... --help` reads: click's plain layout at the terminal's width, values named
as click names them.

Typer's rich panels give every option five columns before its help (long and short names,
their negative forms, the value), which left the help 20 characters at 80 columns; click's
layout gives the help the rest of the line, and its 80-column cap is lifted. Typer 0.29
labels values with Python's types (`<str>`, `<list[Path]>`, `<int range>`); the `cpt`
group names them TEXT, INTEGER, FLOAT, PATH and choices [a|b], a repeatable option by the
one value each use takes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

from typer import Context
from typer.core import TyperArgument, TyperGroup, TyperOption

# click's help formatter takes min(terminal width, this).
CONTEXT_SETTINGS = {"max_content_width": sys.maxsize}

_NAMES = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", Path: "PATH"}
_PATHS = {"file": "FILE", "dir": "DIRECTORY"}


def value_name(param: TyperOption | TyperArgument) -> str:
    """The name of the value that `param` takes, in click's words."""
    descriptor = param.type_descriptor
    if descriptor.is_choice:
        return f"[{'|'.join(str(getattr(c, 'value', c)) for c in descriptor.choices)}]"
    if descriptor.is_path:
        return _PATHS.get(descriptor.path_type, "PATH")
    annotation = descriptor.annotation
    if descriptor.is_list:
        (annotation,) = get_args(annotation)
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)).upper())


class _NamedOption(TyperOption):
    def display_type(self, ctx: Context) -> str:
        return value_name(self)


class _NamedArgument(TyperArgument):
    def display_type(self, ctx: Context) -> str:
        return value_name(self)


def _name_values(command: Any) -> None:
    """Name the values of `command`'s options and arguments, and of its subcommands'."""
    for param in command.params:
        if type(param) is TyperOption:
            param.__class__ = _NamedOption
        elif type(param) is TyperArgument:
            param.__class__ = _NamedArgument
    for subcommand in getattr(command, "commands", {}).values():
        _name_values(subcommand)


class HelpGroup(TyperGroup):
    """The `cpt` group, built after its commands: it names the values of the whole tree."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self)
