"""`cpt explain`: why a query and a document match, token by token (and line by line for
code), coloured on the terminal or as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cpt_embed.cli.common import (
    DeviceOption,
    DtypeOpt,
    DtypeOption,
    ModelOption,
    SideOption,
    for_terminal,
    quiet_transformers,
    user_errors,
)
from cpt_embed.errors import InputError, missing_path, reading
from cpt_embed.model.explain import DEFAULT_STEPS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from cpt_embed.model.explain import Explanation, SideExplanation
    from cpt_embed.search.explain import HitExplanation

# Background colours from a faint to a full score: green raises the similarity, red lowers it.
_GREEN = ((225, 250, 225), (40, 175, 40))
_RED = ((252, 225, 225), (210, 50, 50))
_FAINT = 0.05  # shares of the side's largest |score| left uncoloured
_TOP = 5
_SNIPPET_LINES = 8


def read_argument(value: str, name: str) -> str:
    """`value`, or the text of the UTF-8 file it names as `@PATH` (`@@...` is the literal
    text `@...`); an empty or blank text is refused."""
    if value.startswith("@@"):
        value = value[1:]
    elif value.startswith("@"):
        path = Path(value[1:]).expanduser()
        if path.is_dir():
            raise InputError(f"{name} {path}: a folder; pass a file (@PATH) or the text itself")
        if not path.is_file():
            raise missing_path(path, "file")
        with reading(path):
            value = path.read_text(encoding="utf-8")
    if not value.strip():
        raise InputError(f"{name} is empty: there is nothing to explain; pass a text or @FILE")
    return value


@user_errors
def explain(
    query: Annotated[str, typer.Argument(help="The query: a text, or @FILE to read one.")],
    document: Annotated[
        str,
        typer.Argument(
            help="The document: a text, or @FILE to read one (@src/app.py); @@ starts a text "
            "with @."
        ),
    ],
    model: ModelOption = "default",
    side: Annotated[
        SideOption,
        typer.Option(
            help="How DOCUMENT is embedded: document (search), or query for symmetric tasks "
            "such as STS."
        ),
    ] = SideOption.document,
    code: Annotated[
        bool | None,
        typer.Option(
            "--code/--text",
            help="Scores per line too (--code) or tokens alone (--text); default: per line "
            "for a text with newlines.",
        ),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Layer whose hidden states are attributed: 0 the token embeddings "
            "(default: two thirds of the way up).",
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option(min=1, help="Points on the integration path, in one batch.")
    ] = DEFAULT_STEPS,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    dtype: DtypeOpt = DtypeOption.auto,
    device: DeviceOption = None,
) -> None:
    """Why QUERY and DOCUMENT match: their cosine similarity and each token's share of it
    (integrated gradients at one layer), on both sides, and each line's for code. Green
    tokens raise the similarity, red ones lower it; a side's scores sum to the similarity
    minus its baseline, the similarity when that side's tokens cannot be told apart at
    that layer (docs/explain.md)."""
    query = read_argument(query, "query")
    document = read_argument(document, "document")
    from cpt_embed.model.resolve import resolve_model

    resolve_model(model)  # a wrong name or path fails before torch loads
    quiet_transformers()
    from cpt_embed.model import Encoder

    encoder = Encoder.load(model, device=device)
    explanation = encoder.explain(
        query,
        document,
        document_side=side.value,
        layer=layer,
        steps=steps,
        lines=code,
        dtype=dtype.value,
    )
    if as_json:  # JSON escapes C0 controls; DEL and C1 ones too, for a terminal
        text = json.dumps(explanation.to_dict(), ensure_ascii=False, indent=1)
        print(re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text))
        return
    show(explanation, model, encoder.backbone.config.num_hidden_layers)


def show(explanation: Explanation, model: str, layers: int) -> None:
    """The explanation on the terminal: both texts with each token's background coloured by
    its score, line scores beside code, the top tokens of each side."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    about = (
        f"  ({for_terminal(model, one_line=True)}, layer {explanation.layer} of {layers}, "
        f"{explanation.steps} steps)"
    )
    console.print(
        Text.assemble((f"similarity {explanation.similarity:+.4f}", "bold"), (about, "dim"))
    )
    for name, side in (("query", explanation.query), ("document", explanation.document)):
        console.print()
        console.print(_header(name, side, explanation.similarity), soft_wrap=True)
        body = coloured(side)
        if side.lines is None:
            console.print(body)
        else:
            for line, text in zip(side.lines, body.split("\n", allow_blank=True), strict=False):
                gutter = (f"{line.number:>4} {line.score:+.4f} │ ", "dim")
                console.print(Text.assemble(gutter, text), soft_wrap=True)
        console.print(top_words(side), soft_wrap=True)
    console.print()
    console.print(
        "green raises the similarity, red lowers it; full colour: a side's largest score",
        style="dim",
    )


def _header(name: str, side: SideExplanation, similarity: float) -> Text:
    from rich.text import Text

    special = " ".join(t for t, s in zip(side.tokens, side.special, strict=True) if s)
    cut = ", cut at max_length" if side.truncated else ""
    about = (
        f"  {len(side.tokens)} tokens{cut}, special ones scored 0: "
        f"{for_terminal(special, one_line=True) or 'none'}; scores sum "
        f"{sum(side.scores):+.4f} ~ similarity - baseline {similarity - side.baseline:+.4f} "
        f"(baseline {side.baseline:+.4f})"
    )
    return Text.assemble((name, "bold"), (about, "dim"))


def _colour(score: float, scale: float) -> str | None:
    share = abs(score) / scale if scale > 0 else 0.0
    if share < _FAINT:
        return None
    faint, full = _GREEN if score > 0 else _RED
    rgb = [round(a + (b - a) * min(share, 1.0)) for a, b in zip(faint, full, strict=True)]
    return f"black on rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def coloured(side: SideExplanation) -> Text:
    """The side's text, each token's characters on its colour (control characters shown
    as escapes)."""
    from rich.text import Text

    scale = max((abs(s) for s in side.scores), default=0.0)
    text, done = Text(), 0
    for span, score in zip(side.spans, side.scores, strict=True):
        if span is None or span[1] <= done:
            continue
        start = max(span[0], done)
        text.append(for_terminal(side.text[done:start]))
        text.append(for_terminal(side.text[start : span[1]]), style=_colour(score, scale))
        done = span[1]
    return text


def _words(side: SideExplanation) -> list[tuple[float, str]]:
    """(score, word) of each run of tokens that split one word (`it`, `era`, `ble`), their
    scores summed; tokens of other characters stand alone."""
    runs: list[list] = []  # [score, start, stop]
    for span, score in zip(side.spans, side.scores, strict=True):
        if span is None or span[0] == span[1]:
            continue
        start, stop = span
        last = runs[-1] if runs else None
        if last and last[2] == start and side.text[start - 1 : start + 1].isalnum():
            last[0], last[2] = last[0] + score, stop
        else:
            runs.append([score, start, stop])
    return [(score, side.text[start:stop]) for score, start, stop in runs]


def top_words(side: SideExplanation) -> Text:
    from rich.text import Text

    ranked = sorted(_words(side), key=lambda pair: -pair[0])[:_TOP]
    best = ", ".join(f"{for_terminal(w.strip(), one_line=True)!r} {s:+.4f}" for s, w in ranked)
    return Text(f"  most: {best}", style="dim")


def show_hit(console: Console, explanation: HitExplanation) -> None:
    """A search hit's explained snippet: the similarity, then `_SNIPPET_LINES` lines around
    the line that carries most of it, numbered as in the file, each with its score and its
    tokens coloured, then the hit's top words."""
    from rich.text import Text

    side = explanation.document
    about = f"  similarity {explanation.similarity:+.4f}, file heading {explanation.heading:+.4f}"
    cut = ", cut at max_length" if side.truncated else ""
    console.print(Text(about + cut, style="dim"))
    lines, body = side.lines or [], coloured(side).split("\n", allow_blank=True)
    best = max(range(len(lines)), key=lambda i: lines[i].score, default=0)
    first = max(0, min(best - 2, len(lines) - _SNIPPET_LINES))
    if first:
        console.print(Text(f"    ... {first} lines above", style="dim"))
    for line, text in list(zip(lines, body, strict=False))[first : first + _SNIPPET_LINES]:
        gutter = (f"  {line.number:>4} {line.score:+.4f} │ ", "dim")
        console.print(Text.assemble(gutter, text), soft_wrap=True)
    below = len(side.text.split("\n")) - first - _SNIPPET_LINES
    if below > 0:
        console.print(Text(f"    ... {below} more lines", style="dim"))
    console.print(top_words(side), soft_wrap=True)
