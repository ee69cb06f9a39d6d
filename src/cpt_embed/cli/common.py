"""What every command shares: the error handler, the options declared once, and the
consoles and printing helpers."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

F = TypeVar("F", bound=Callable)
# Messages and progress go to stderr, so that stdout carries only results (--json, tables).
err_console = Console(stderr=True)


class SideOption(StrEnum):
    query = "query"
    document = "document"


class DtypeOption(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="`default`, a model folder or a hub id.")
]
IndexModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Default: the index's model.")
]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: auto).")]
BatchSizeOption = Annotated[int, typer.Option(min=1, help="Most texts per forward pass.")]
DtypeOpt = Annotated[
    DtypeOption,
    typer.Option(help="Compute precision; auto: bfloat16 where the hardware has it."),
]


# C0 controls, DEL and C1 controls: what a terminal takes as commands (ESC [2J clears it,
# ESC ]0; sets its title, 0x9b is a CSI by itself).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHOWN_AS = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def for_terminal(text: str, *, one_line: bool = False) -> str:
    """`text` from a file (its contents or its name) with every control character shown as
    an escape (`\\x1b`), so that printing it cannot move the cursor, clear the screen or
    retitle the terminal; tabs and newlines are kept, unless `one_line` (a file name)."""

    def shown(match: re.Match) -> str:
        char = match.group()
        if char in "\t\n" and not one_line:
            return char
        return _SHOWN_AS.get(char, f"\\x{ord(char):02x}")

    return _CONTROLS.sub(shown, text)


def say(message: str) -> None:
    """One line to stderr, as written (no markup highlighting, no wrapping)."""
    err_console.print(message, highlight=False, soft_wrap=True)


def user_errors(func: F) -> F:
    """Print the project's own errors (bad input, a model not found) and OS errors (a
    missing file, a full disk, no permission) as one line and exit 2, no traceback (set
    CPT_DEBUG=1 to see it). Anything else is a bug and keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from cpt_embed.atomic import no_space_error
        from cpt_embed.errors import CptError, first_line

        try:
            try:
                return func(*args, **kwargs)
            except OSError as err:  # a full disk: the message says what to free
                full = no_space_error(err)
                if full is None:
                    raise
                raise full from err
        except (CptError, OSError) as err:
            if os.environ.get("CPT_DEBUG"):
                raise
            # escaped: rich would drop bracketed words such as cpt-embed[ray] as markup
            line = escape(for_terminal(first_line(err), one_line=True))
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def quiet_transformers() -> None:
    """No transformers warnings or progress bars on the terminal: ours say what happens.

    Said through the environment, which transformers reads as it loads, so that a command
    whose input is wrong fails before importing it (a user's own setting stays)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # loaded already: by an earlier command in this process
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
