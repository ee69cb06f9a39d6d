"""Why two texts match: each token's share, and each code line's, of their cosine similarity.

The tokens are those the model embeds, special tokens and delimiters included (they score
0). A side's scores are layer integrated gradients (attribution.py): the gradient of the
cosine with respect to the hidden states that layer `layer` gives the side's tokens,
integrated along the straight path from a baseline in which each text token's state is
the mean of them all, the other side's vector held fixed. They sum to
`similarity - baseline` (the completeness property), `baseline` being the cosine at that
baseline, within the quadrature's error. docs/explain.md says why this method, this
baseline and this layer.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cpt_embed.errors import InputError
from cpt_embed.model.config import SIDES, Side

if TYPE_CHECKING:
    import torch

    from cpt_embed.model.attribution import Shares
    from cpt_embed.model.encoder import Encoder

# Gauss-Legendre points on the path: each costs a pass of the layers above `layer`; 4 come
# within about 3% of the exact integral (docs/explain.md).
DEFAULT_STEPS = 4


def layer_count(encoder: Encoder) -> int:
    """The backbone's Transformer layers."""
    return int(encoder.backbone.config.num_hidden_layers)


def default_layer(layers: int) -> int:
    """The layer explained when none is given: two thirds of the way up (docs/explain.md)."""
    return round(2 * layers / 3)


@dataclass(frozen=True)
class Line:
    """One source line of a side: its number (from 1), text and the sum of its tokens' scores."""

    number: int
    text: str
    score: float


@dataclass(frozen=True)
class SideExplanation:
    """One side as the model embeds it: every token, special ones included.

    tokens: the text each token covers (the vocabulary string for special tokens and
        delimiters); spans: its (start, end) characters in `text`, None for those;
    special: special tokens and delimiters, which always score 0; scores: each token's
        share of the similarity; baseline: the similarity with this side's text tokens at
        the baseline (what `sum(scores)` is counted from); lines: per source line, for
        code (None for prose); truncated: the text ran past max_length and was cut.
    """

    text: str
    side: Side
    tokens: list[str]
    spans: list[tuple[int, int] | None]
    special: list[bool]
    scores: list[float]
    baseline: float
    lines: list[Line] | None
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`tokens`, `scores`, ... and `lines` for code)."""
        out: dict[str, Any] = {
            "side": self.side,
            "tokens": self.tokens,
            "scores": self.scores,
            "special": self.special,
            "spans": [list(span) if span else None for span in self.spans],
            "baseline": self.baseline,
            "truncated": self.truncated,
        }
        if self.lines is not None:
            out["lines"] = [
                {"line": line.number, "text": line.text, "score": line.score} for line in self.lines
            ]
        return out


@dataclass(frozen=True)
class Explanation:
    """The cosine similarity of a query and a document and each side's share of it,
    explained at `layer` (0: the token embeddings) with `steps` points on the path."""

    similarity: float
    query: SideExplanation
    document: SideExplanation
    layer: int
    steps: int

    def to_dict(self) -> dict[str, Any]:
        """`{"similarity", "layer", "steps", "query": {...}, "document": {...}}`."""
        return {
            "similarity": self.similarity,
            "layer": self.layer,
            "steps": self.steps,
            "query": self.query.to_dict(),
            "document": self.document.to_dict(),
        }


@dataclass(frozen=True)
class SideTokens:
    """A text's token ids as the model embeds them on one side, with what each covers."""

    ids: list[int]
    labels: list[str]
    spans: list[tuple[int, int] | None]
    special: list[bool]
    truncated: bool


def side_tokens(encoder: Encoder, text: str, side: Side) -> SideTokens:
    """The token ids `encoder` embeds for `text` on `side` (`DelimitedTokenizer.encode`), the
    characters of `text` each covers (from the tokenizer's offsets; None for special tokens
    and delimiters) and whether the text was cut to max_length."""
    tok = encoder.tokens
    ids = tok.encode([text], side)[0]
    opening = encoder.config.delimiters[side][0]
    full = encoder.tokenizer(
        opening + text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    first, end = len(tok.lead), len(ids) - len(tok.suffix_ids[side]) - len(tok.trail)
    special = [not first <= i < end for i in range(len(ids))]
    spans: list[tuple[int, int] | None] = [None] * len(ids)
    for i, (got, expected) in enumerate(zip(ids[first:end], full["input_ids"], strict=False)):
        if got != expected:  # only where a text without spaces was cut inside a word
            break
        start, stop = full["offset_mapping"][i]
        if opening and stop <= len(opening):
            special[first + i] = True
        else:
            spans[first + i] = (max(start - len(opening), 0), stop - len(opening))
    labels = [
        text[span[0] : span[1]] if span else label
        for span, label in zip(spans, encoder.tokenizer.convert_ids_to_tokens(ids), strict=True)
    ]
    return SideTokens(ids, labels, spans, special, len(full["input_ids"]) > end - first)


def _lines(text: str, tokens: SideTokens, scores: list[float]) -> list[Line]:
    """Each source line up to the last embedded one, its tokens' scores summed (a token
    counts on the line where it starts)."""
    breaks = [i for i, char in enumerate(text) if char == "\n"]
    texts = text.split("\n")
    totals = [0.0] * len(texts)
    last = 0
    for span, score in zip(tokens.spans, scores, strict=True):
        if span is not None:
            line = bisect.bisect_left(breaks, span[0])
            totals[line] += score
            last = max(last, line)
    return [Line(n + 1, texts[n].removesuffix("\r"), totals[n]) for n in range(last + 1)]


def _check(encoder: Encoder, query: str, document: str, document_side: Side, layer: int) -> None:
    if not getattr(encoder.tokenizer, "is_fast", False):
        raise InputError(
            "explaining needs a fast tokenizer (a tokenizer.json), for the characters each "
            f"token covers; {type(encoder.tokenizer).__name__} is not one"
        )
    for name, value in (("query", query), ("document", document)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if document_side not in SIDES:
        raise InputError(f"document_side must be one of {SIDES}, got {document_side!r}")
    layers = layer_count(encoder)
    if not 0 <= layer < layers:
        raise InputError(
            f"layer must be from 0 (token embeddings) to {layers - 1} (the model has "
            f"{layers} layers; the last one's output is what is pooled), got {layer}"
        )


def _explained(
    text: str, side: Side, tokens: SideTokens, shares: Shares, lines: bool | None
) -> SideExplanation:
    scores = [float(s) for s in shares.scores]
    with_lines = "\n" in text if lines is None else lines
    return SideExplanation(
        text=text,
        side=side,
        tokens=tokens.labels,
        spans=tokens.spans,
        special=tokens.special,
        scores=scores,
        baseline=shares.at_baseline,
        lines=_lines(text, tokens, scores) if with_lines else None,
        truncated=tokens.truncated,
    )


def explain_pair(
    encoder: Encoder,
    query: str,
    document: str,
    *,
    document_side: Side = "document",
    layer: int | None = None,
    steps: int = DEFAULT_STEPS,
    lines: bool | None = None,
    dtype: str | torch.dtype | None = "auto",
) -> Explanation:
    """What `Encoder.explain` returns; see there."""
    # torch loads here: the results and defaults above serve the CLI without it
    from cpt_embed.model import attribution
    from cpt_embed.model.runtime.devices import to_dtype

    layer = default_layer(layer_count(encoder)) if layer is None else layer
    _check(encoder, query, document, document_side, layer)
    attribution.path_points(steps)  # checks steps before any work
    settings = attribution.Settings(layer, steps, to_dtype(dtype, encoder.device))
    q_tokens = side_tokens(encoder, query, "query")
    d_tokens = side_tokens(encoder, document, document_side)
    was_training = encoder.training
    encoder.eval()
    try:
        # the document's shares need the query's vector, and give the document's
        target = attribution.vector(encoder, q_tokens.ids, "query", settings)
        d_shares = attribution.attribute(
            encoder, d_tokens.ids, d_tokens.special, document_side, target, settings
        )
        q_shares = attribution.attribute(
            encoder, q_tokens.ids, q_tokens.special, "query", d_shares.vector, settings
        )
    finally:
        encoder.train(was_training)
    return Explanation(
        similarity=d_shares.at_input,
        query=_explained(query, "query", q_tokens, q_shares, lines),
        document=_explained(document, document_side, d_tokens, d_shares, lines),
        layer=layer,
        steps=steps,
    )
