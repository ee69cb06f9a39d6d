"""Why each search hit matches its query: the model's explanation (model/explain.py) of the
query and the chunk as the index embedded it, the heading line that names its file
included, shown over the hit's own text with its lines numbered as in the file.

The explanation is of the model's cosine similarity in every mode: in hybrid search that is
the dense part of the fused score (DENSE_WEIGHT of it, model/fusion.py); in lexical search
the hit was ranked by BM25, and the explanation shows what the model sees in it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cpt_embed.model.explain import DEFAULT_STEPS, Explanation, Line
from cpt_embed.search.chunks import Chunk

if TYPE_CHECKING:
    from cpt_embed.model import Encoder
    from cpt_embed.search.query import Hit

# the best hits explained at most: each costs a backward pass (about 0.15 s for a 256-token
# chunk on 2 cores)
MAX_EXPLAINED_HITS = 20


@dataclass(frozen=True)
class HitExplanation(Explanation):
    """A hit's explanation: `similarity`, the cosine of the query and the chunk as embedded;
    `query`, the query side; `document`, the chunk side over the hit's text (spans into
    `hit.text`, lines numbered as in the file), whose tokens of the heading line (file path
    and name, embedded above the text) have no span and share `heading` of the score."""

    heading: float

    def to_dict(self) -> dict[str, Any]:
        """Explanation.to_dict with `heading`."""
        return {**super().to_dict(), "heading": self.heading}


def explain_hits(
    encoder: Encoder, query: str, hits: list[Hit], *, steps: int = DEFAULT_STEPS
) -> list[HitExplanation]:
    """The explanations of the first MAX_EXPLAINED_HITS hits, in order (`encoder` is the
    index's model)."""
    return [_explain_hit(encoder, query, hit, steps) for hit in hits[:MAX_EXPLAINED_HITS]]


def _explain_hit(encoder: Encoder, query: str, hit: Hit, steps: int) -> HitExplanation:
    chunk = Chunk(hit.path, hit.language, hit.start_line, hit.end_line, hit.text, hit.name)
    embedded = chunk.embed_text
    offset = len(embedded) - len(hit.text)  # the heading line and its newline
    both = encoder.explain(query, embedded, steps=steps)
    side = both.document
    spans = [
        (span[0] - offset, span[1] - offset) if span and span[0] >= offset else None
        for span in side.spans
    ]
    heading = sum(
        score
        for span, special, score in zip(side.spans, side.special, side.scores, strict=True)
        if span is not None and span[0] < offset and not special
    )
    first = hit.start_line or 1  # 0: a chunk of a vector id, without lines
    lines = [
        Line(first + line.number - 2, line.text, line.score)
        for line in side.lines or []
        if line.number >= 2
    ]
    document = replace(side, text=hit.text, spans=spans, lines=lines)
    return HitExplanation(
        both.similarity, both.query, document, both.layer, both.steps, heading=heading
    )
