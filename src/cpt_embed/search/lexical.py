"""The lexical half of an index folder: BM25 over the same chunks as the vectors, row for
row (model/lexical.py: code-aware terms, identifiers split and kept whole), in
INDEX/lexical/ (bm25s's arrays as .npy, never pickled; vocabulary and settings as JSON).
Built with the index and rebuilt by every update, inside the same atomic folder swap."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cpt_embed.model.lexical import BM25

LEXICAL = "lexical"


def write_lexical(folder: Path, texts: list[str]) -> None:
    """BM25 over `texts` (the chunks in row order) into the index being built in `folder`."""
    from cpt_embed.model.lexical import BM25

    BM25(texts, code=True).save(folder / LEXICAL)


def read_lexical(index: Path) -> BM25 | None:
    """The lexical index of an index folder, None where it has none."""
    from cpt_embed.model.lexical import BM25

    folder = Path(index) / LEXICAL
    return BM25.load(folder) if folder.is_dir() else None
