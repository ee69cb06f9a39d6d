"""What every evaluation task receives, and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpt_embed.eval.cache import CachedEncoder
from cpt_embed.eval.data import Checksums


@dataclass
class Context:
    """The model (through the embedding cache), the data folder and the shared settings.

    symmetric_side: the side used for both texts of symmetric tasks (STS, classification);
    retriever: "dense" (the embedder), or "bm25" (no embedder: retrieval and code tasks).
    """

    embedder: CachedEncoder | None
    data_dir: Path
    symmetric_side: str = "query"
    seed: int = 0
    checksums: Checksums = field(default_factory=Checksums)
    retriever: str = "dense"

    def embed(self, texts: list[str], side: str | None = None) -> np.ndarray:
        """Embeddings of `texts` (on the symmetric side unless told)."""
        if self.embedder is None:
            raise RuntimeError(f"the {self.retriever} retriever embeds nothing")
        return self.embedder.encode(texts, side or self.symmetric_side)

    def embed_unique(self, texts: list[str], side: str | None = None) -> np.ndarray:
        """Like `embed`, encoding each distinct text once."""
        unique = list(dict.fromkeys(texts))
        vectors = self.embed(unique, side)
        index = {text: i for i, text in enumerate(unique)}
        return vectors[[index[t] for t in texts]]

    def rng(self, salt: str) -> np.random.Generator:
        """A generator seeded by the run's seed and `salt`, so tasks are reproducible alone."""
        return np.random.default_rng([self.seed, *salt.encode()])


@dataclass
class TaskResult:
    """One task's numbers: `scores[metric]` is the headline, `details` the breakdowns,
    `protocol` how the numbers are made, in words (every report prints it)."""

    task: str
    group: str
    metric: str
    scores: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    seconds: float = 0.0
    protocol: str = ""

    @property
    def score(self) -> float:
        return self.scores[self.metric]


@dataclass(frozen=True)
class Task:
    """A task: its name (the name in every report), group, how it runs, and the files it
    reads (below the data dir, or absolute for a folder of the user's)."""

    name: str
    group: str
    run: Callable[[Context], TaskResult]
    files: tuple[str, ...] = ()

    @classmethod
    def from_folder(cls, path: str | Path) -> Task:
        """The task of a folder (or STS .tsv file) in one of the layouts of the evaluation
        data, named after it; see `cpt_embed.eval.folders`."""
        from cpt_embed.eval.folders import folder_task

        return folder_task(Path(path))
