"""The `cpt` command: parse, call the library, print."""

from __future__ import annotations

import functools
import os
import sys
import time
from enum import Enum
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


class SideOption(str, Enum):
    query = "query"
    document = "document"


class DtypeOption(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def _user_errors(func):
    """Print errors caused by the user's input as one line and exit 2, no traceback
    (set CPT_DEBUG=1 to see it)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from cpt_embed.errors import CptError

        try:
            return func(*args, **kwargs)
        except (CptError, ValueError, TypeError, FileNotFoundError) as err:
            if os.environ.get("CPT_DEBUG"):
                raise
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
) -> None:
    """Mine pairs, train, evaluate, embed, search and serve text and code embeddings.

    Every MODEL argument takes `default` (all-MiniLM-L6-v2), a local folder or a hub id.
    """


ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="`default`, a model folder or a hub id.")
]


@app.command()
@_user_errors
def embed(
    input: Annotated[
        str,
        typer.Argument(
            help="Texts: .txt (one a line), .jsonl, .parquet (optionally .gz), or - "
            "for lines on stdin."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Where to write: .npy (matrix) or .parquet (id, embedding)."
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
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 32,
    dtype: Annotated[DtypeOption, typer.Option(help="Compute precision.")] = DtypeOption.float32,
    max_length: Annotated[
        int | None, typer.Option(min=1, help="Tokens per text (default: the model's).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: auto).")
    ] = None,
) -> None:
    """Embed texts from a file or stdin into a .npy or .parquet file."""
    from cpt_embed.data.readers import read_texts
    from cpt_embed.data.vectors import check_vector_path, write_vectors
    from cpt_embed.model import Encoder

    check_vector_path(output)
    data = read_texts(input, field=field, id_field=id_field)
    _quiet_transformers()
    overrides = {"max_length": max_length} if max_length else {}
    encoder = Encoder.load(model, device=device, **overrides)
    start = time.perf_counter()
    vectors = encoder.encode(
        data.texts, side=side.value, batch_size=batch_size, dtype=dtype.value, show_progress=True
    )
    seconds = time.perf_counter() - start
    write_vectors(output, vectors, data.ids)
    rate = len(data.texts) / seconds if seconds > 0 else float("inf")
    err_console.print(
        f"wrote {len(data.texts)} x {encoder.dim} embeddings to {output} ({rate:,.0f} texts/s)",
        highlight=False,
        soft_wrap=True,
    )


if __name__ == "__main__":
    sys.exit(app())
