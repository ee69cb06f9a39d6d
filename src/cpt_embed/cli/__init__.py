"""The `cpt` command: parse, call the library, print. One module per command group; the
options, the error handler and the printing helpers they share are in `common`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cpt_embed import __version__
from cpt_embed.cli import embed, evaluate, index, pairs, serve, train

app = typer.Typer(
    help="cpt-embed: text and code embeddings by contrastive pre-training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
        from cpt_embed.model import TRUST_PICKLE_ENV

        os.environ[TRUST_PICKLE_ENV] = "1"


app.command()(embed.embed)
app.command("eval")(evaluate.eval_)
app.add_typer(pairs.app, name="pairs")
app.command()(train.train)
app.add_typer(index.app, name="index")
app.command()(index.search)
app.command()(serve.serve)

__all__ = ["app"]
