"""The `cpt` command: parse, call the library, print. One module per command group; the
options, the error handler and the printing helpers they share are in `common`."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import Annotated, Any, NoReturn

import typer

from cpt_embed import __version__
from cpt_embed.cli import embed, evaluate, explain, index, pairs, serve, train
from cpt_embed.cli.help import CONTEXT_SETTINGS, HelpGroup


class _Cpt(typer.Typer):
    """The `cpt` app; called (by the `cpt` script, `python -m cpt_embed.cli`), it runs one
    command line and ends the process. Tests run it through typer's CliRunner."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Run the command line, then end the process at once, its output flushed: the
        interpreter's teardown of torch and transformers (every module and tensor freed
        one by one) takes about a second. Exit handlers (Ray, multiprocessing, logging) still
        run; a bug's traceback leaves the ordinary way."""
        try:
            super().__call__(*args, **kwargs)
            code: Any = 0
        except SystemExit as stop:
            code = stop.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        atexit._run_exitfuncs()
        with contextlib.suppress(BrokenPipeError):  # a reader gone (`cpt ... | head`)
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code or 0)


app = _Cpt(
    cls=HelpGroup,
    help="cpt-embed: text and code embeddings by contrastive pre-training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT_SETTINGS,
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
app.command()(explain.explain)
app.command()(serve.serve)

__all__ = ["app"]
