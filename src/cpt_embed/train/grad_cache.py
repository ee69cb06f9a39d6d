"""Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup"): a batch of any size in the memory of one chunk.

1. Embed every chunk without a graph, saving the RNG state of each (dropout must repeat).
2. Compute the loss on all embeddings at once; back-propagate to the embeddings only.
3. Embed each chunk again with a graph and back-propagate its cached embedding gradient.
The parameter gradients equal those of one full-batch step.

How a side is cut into chunks is train/chunks.py's business; here the chunks of each side
come with the text each row holds, and the loss sees the rows in their own order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

Batch = dict[str, torch.Tensor]


class _RngState:
    """The CPU and CUDA RNG states at one moment, to replay a forward pass exactly."""

    def __init__(self, devices: list[int]) -> None:
        self.devices = devices
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in devices]

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda, strict=True):
                torch.cuda.set_rng_state(state, device)
            yield


class GradCache:
    """Runs contrastive steps whose batch is split into chunks for the forward passes.

    encode: maps a tokenized chunk to embeddings (n, dim) with a graph.
    no_sync: for DistributedDataParallel, `model.no_sync`, so gradients are all-reduced
    only with the last chunk.
    autocast: a context manager factory for mixed precision (or none).
    """

    def __init__(
        self,
        encode: Callable[[Batch], torch.Tensor],
        *,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        self.encode = encode
        self.no_sync = no_sync or contextlib.nullcontext
        self.autocast = autocast or contextlib.nullcontext
        self.devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []

    def _embed_without_graph(self, chunks: Sequence[Batch]) -> tuple[torch.Tensor, list]:
        states, parts = [], []
        with torch.no_grad():
            for chunk in chunks:
                states.append(_RngState(self.devices))
                with self.autocast():
                    parts.append(self.encode(chunk).float())
        return torch.cat(parts), states

    def step(
        self,
        sides: Sequence[Sequence[Batch]],
        loss_fn: Callable[..., torch.Tensor],
        *,
        orders: Sequence[torch.Tensor] | None = None,
        cache: bool | None = None,
        **loss_kwargs: Any,
    ) -> torch.Tensor:
        """One step's gradients for `sides` (each a list of chunks: x, y, and optionally
        hard negatives); `loss_fn(x, y[, negatives], **loss_kwargs)` sees whole sides.
        orders: for each side, the text each row of its chunks holds (row k of the chunks
        concatenated is text orders[s][k]); none means the chunks are in text order.
        cache: whether to cache gradients; by default when a side has more than one chunk
        (without it, all chunks are embedded in one graph). Returns the loss (detached)."""
        if cache is None:
            cache = any(len(chunks) > 1 for chunks in sides)
        if not cache:
            with self.autocast():
                embeddings = [
                    torch.cat([self.encode(chunk) for chunk in chunks]).float() for chunks in sides
                ]
            loss = self._loss(loss_fn, _in_text_order(embeddings, orders), loss_kwargs)
            loss.backward()
            return loss.detach()

        cached = [self._embed_without_graph(chunks) for chunks in sides]
        embeddings = [e.requires_grad_() for e, _ in cached]
        loss = self._loss(loss_fn, _in_text_order(embeddings, orders), loss_kwargs)
        loss.backward()
        work = [
            (chunk, state, grad)
            for chunks, (full, states) in zip(sides, cached, strict=True)
            for chunk, state, grad in zip(
                chunks,
                states,
                full.grad.split([len(c["pool_index"]) for c in chunks]),
                strict=True,
            )
        ]
        for index, (chunk, state, grad) in enumerate(work):
            last = index == len(work) - 1
            with contextlib.nullcontext() if last else self.no_sync(), state.restored():
                with self.autocast():
                    again = self.encode(chunk).float()
                again.backward(grad)
        return loss.detach()

    @staticmethod
    def _loss(loss_fn, embeddings: list[torch.Tensor], kwargs: dict) -> torch.Tensor:
        x, y, *rest = embeddings
        if rest:
            kwargs = {**kwargs, "negatives": rest[0]}
        return loss_fn(x, y, **kwargs)


def _in_text_order(
    embeddings: list[torch.Tensor], orders: Sequence[torch.Tensor] | None
) -> list[torch.Tensor]:
    if orders is None:
        return embeddings
    return [e[torch.argsort(o.to(e.device))] for e, o in zip(embeddings, orders, strict=True)]
