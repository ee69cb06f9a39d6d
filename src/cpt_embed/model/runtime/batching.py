"""How `Encoder.encode` runs: token sequences sorted by length into batches under a token
budget, each batch run on the backbone or its cast copy, compiled or eager, as a ragged
row or padded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cpt_embed.model.runtime.attention import attends_each
from cpt_embed.model.runtime.compiler import InferenceCompiler
from cpt_embed.model.runtime.copy import InferenceCopy
from cpt_embed.model.runtime.devices import to_device
from cpt_embed.model.runtime.packing import is_packed
from cpt_embed.model.runtime.threads import GOVERNOR

if TYPE_CHECKING:
    from cpt_embed.model.config import Side
    from cpt_embed.model.tokenize import DelimitedTokenizer

# Padded tokens per forward pass on CPU: bigger batches spill the attention blocks out of
# cache and run slower (docs/benchmarks.md).
CPU_BATCH_TOKENS = 4096
# A batch of short texts runs as a ragged row (no padding in the linear layers) where
# padding would be at least this share of its tokens: below it, re-padding for attention
# costs what it saves (64 unsorted sentences: 1.25-1.4x ragged). Long ones always do
# (`takes_ragged`).
RAGGED_FROM_PADDING = 0.1

# The model's vectors (batch, dim) of a batch, computed on the given backbone module.
Embed = Callable[[dict[str, Any], nn.Module], torch.Tensor]


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None
) -> list[list[int]]:
    """Indices grouped longest first into batches of at most `batch_size` texts and at most
    `max_tokens` padded tokens (a text longer than that goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            last = batches[-1]
            width = lengths[last[0]]
            if len(last) < batch_size and (
                max_tokens is None or (len(last) + 1) * width <= max_tokens
            ):
                last.append(i)
                continue
        batches.append([i])
    return batches


def padding_share(sequences: list[list[int]]) -> float:
    """Share of a padded batch's tokens that would be padding."""
    padded = len(sequences) * max(len(s) for s in sequences)
    return 1 - sum(len(s) for s in sequences) / padded


def takes_ragged(sequences: list[list[int]]) -> bool:
    """True where a batch runs faster as a ragged row than padded: its sequences are long
    enough to attend one at a time (attention.attends_each), or padding would be
    RAGGED_FROM_PADDING of its tokens or more."""
    lengths = [len(s) for s in sequences]
    return attends_each(lengths) or padding_share(sequences) >= RAGGED_FROM_PADDING


class InferenceRuntime:
    """Runs `Encoder.encode`'s batches; keeps the cast copy and the compiled backbone from
    one call to the next, made again only when the weights change."""

    def __init__(self) -> None:
        self.copy = InferenceCopy()
        self.compiler = InferenceCompiler()

    def encode(
        self,
        model: nn.Module,
        backbone: nn.Module,
        embed: Embed,
        tokens: DelimitedTokenizer,
        sequences: list[list[int]],
        side: Side,
        *,
        dim: int,
        batch_size: int,
        max_batch_tokens: int | None,
        dtype: torch.dtype,
        compile: bool,
        show_progress: bool,
        prepared: bool = False,
    ) -> np.ndarray:
        """float32 vectors (n, dim) of `sequences` (row i of sequences[i]) from `embed`, run
        on `backbone` (`model`'s) in float32, else on its cast copy; compiled where asked
        and the copy is not packed; as ragged rows where the copy takes them and
        `takes_ragged` says they run faster; on CPU each batch on the cores other
        processes leave free (threads.py). `model` is in eval mode meanwhile
        and returned to its mode after; `max_batch_tokens` defaults to CPU_BATCH_TOKENS on
        CPU (no limit elsewhere). `prepared`: `backbone` is already the CPU copy to run, one
        that takes ragged rows (runtime/bert.py)."""
        device = torch.device("cpu") if prepared else next(backbone.parameters()).device
        if max_batch_tokens is None and device.type == "cpu":
            max_batch_tokens = CPU_BATCH_TOKENS
        batches = length_batches([len(s) for s in sequences], batch_size, max_batch_tokens)
        # the bar's rate counts the one-off work before the first batch, as callers' clocks do
        with tqdm(
            total=len(sequences), disable=not show_progress, unit="text", desc="embedding"
        ) as bar:
            # once per call: checking the weights for changes is not per-batch work
            module = backbone if prepared else self.copy.backbone(backbone, dtype)
            # a pre-packed CPU copy runs faster in eager mode than compiled (docs/benchmarks.md)
            compiled = self.compiler.module(module) if compile and not is_packed(module) else None
            ragged = compiled is None and (prepared or self.copy.ragged(module))
            # the copy is always in eval mode; switching the backbone's ~100 modules costs 0.5 ms
            switch = (
                module is backbone and not prepared and any(m.training for m in model.modules())
            )
            was_training = model.training
            if switch:
                model.eval()
            out = np.empty((len(sequences), dim), dtype=np.float32)
            try:
                with torch.inference_mode(), GOVERNOR.running(device.type == "cpu") as threads:
                    for rows in batches:
                        threads()
                        chosen = [sequences[i] for i in rows]
                        if ragged and takes_ragged(chosen):
                            batch = tokens.ragged(chosen, side)
                        else:
                            batch = to_device(tokens.pad(chosen, side), device)
                        vectors = self._embed_batch(embed, batch, module, compiled)
                        out[rows] = vectors.float().cpu().numpy()
                        bar.update(len(rows))
            finally:
                if switch:
                    model.train(was_training)
        return out

    def _embed_batch(
        self,
        embed: Embed,
        batch: dict[str, Any],
        module: nn.Module,
        compiled: nn.Module | None,
    ) -> torch.Tensor:
        if compiled is None:
            return embed(batch, module)
        rows = len(batch["input_ids"])
        if rows == 1:  # a batch of one would cost a second compilation (size 1 is special)
            batch = {k: v.expand(2, *v.shape[1:]) for k, v in batch.items()}
        return self.compiler.run(
            lambda: embed(batch, compiled)[:rows],
            lambda: embed(batch, module)[:rows],
        )
