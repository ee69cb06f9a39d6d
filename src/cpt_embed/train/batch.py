"""A step's batch as the forward passes take it: this process's slice of the global batch,
each side (x, y, hard negatives) cut into chunks, tensors ready to move to the device.

From the pair stream (`from_refs`) the token ids come from the token cache and the
batch holds no repeated text, so the loss needs no keys; from records (`from_records`,
what `Trainer.train_step` takes) the texts are tokenized here and keyed, so that pairs
sharing a text mask each other in the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cpt_embed.model.tokenize import DelimitedTokenizer
from cpt_embed.train.chunks import ChunkPlan, Side, side_chunks
from cpt_embed.train.data import PairStore, Ref
from cpt_embed.train.tokens import key_of

# The sides of a pair and the side each is embedded on.
COLUMNS = (("x", "query"), ("y", "document"), ("negatives", "document"))


@dataclass
class StepBatch:
    """The sides of this process's share of one global batch, and the text keys the loss
    masks duplicates with (None: the batch has none)."""

    sides: list[Side]
    pairs: int
    keys: dict[str, torch.Tensor] | None = None

    @property
    def lengths(self) -> list[np.ndarray]:
        """Token counts of each side's texts."""
        return [side.lengths for side in self.sides]

    def pin_memory(self) -> StepBatch:
        """The same batch in page-locked memory, for non-blocking copies to a GPU."""
        for side in self.sides:
            side.chunks = [{k: v.pin_memory() for k, v in c.items()} for c in side.chunks]
        return self


def local_share(items: Sequence, rank: int, world: int) -> list:
    """This process's equal share of a global batch."""
    share = len(items) // world
    return list(items[rank * share : (rank + 1) * share])


def from_refs(
    store: PairStore,
    refs: list[Ref],
    tokens: DelimitedTokenizer,
    plan: ChunkPlan,
    *,
    rank: int = 0,
    world: int = 1,
    pin: bool = False,
) -> StepBatch:
    """The batch of stream pairs `refs`, cut by `plan` (pinned where `pin`)."""
    local = local_share(refs, rank, world)
    columns = [("x", "query"), ("y", "document")]
    if store.k:
        columns.append(("negatives", "document"))
    sides = [side_chunks(tokens, store.sequences(local, c), side, plan) for c, side in columns]
    batch = StepBatch(sides, len(local))
    return batch.pin_memory() if pin else batch


def from_records(
    records: list[dict],
    tokens: DelimitedTokenizer,
    plan: ChunkPlan,
    negatives: str | None = None,
    *,
    rank: int = 0,
    world: int = 1,
) -> StepBatch:
    """The batch of pair records (`x`, `y`, and `negatives` lists where named), tokenized
    and keyed here."""
    local = local_share(records, rank, world)
    texts = {"x": [r["x"] for r in local], "y": [r["y"] for r in local]}
    if negatives:
        texts["negatives"] = [n for r in local for n in r[negatives]]
    sides = [
        side_chunks(tokens, tokens.encode(texts[column], side), side, plan)
        for column, side in COLUMNS
        if column in texts
    ]
    keys = {f"{c}_keys": torch.tensor([key_of(t) for t in texts[c]]) for c in ("x", "y")}
    return StepBatch(sides, len(local), keys)
