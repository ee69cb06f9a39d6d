"""How much memory a chunk takes, measured before the first step, and the chunk size a GPU's
free memory allows.

Gradient caching keeps one chunk's activations at a time, so the chunk, not the batch,
decides the memory of a step: what autograd saves for the backward pass of a probe chunk
(counted through saved-tensor hooks, each storage once, parameters left out), per token,
times the tokens of a chunk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from cpt_embed.model import Encoder
from cpt_embed.model.tokenize import DelimitedTokenizer
from cpt_embed.train.chunks import PASS_COST_TOKENS, ChunkPlan

# The share of a GPU's free memory (after weights, gradients and AdamW's two moments) that
# one chunk's activations may take: the rest is for the backward pass's own buffers, the
# loss over the whole batch and the allocator's slack.
GPU_CHUNK_SHARE = 0.4
# Bounds of the token budget of a chunk on a GPU.
MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS = 512, 1 << 18
# The share of the memory available at start (outside GPUs) that a whole batch's
# activations may take when its chunks run in one graph, without gradient caching.
CPU_BATCH_SHARE = 0.25


def activation_bytes_per_token(
    encoder: Encoder,
    tokens: DelimitedTokenizer,
    packed: bool,
    autocast: Callable[[], AbstractContextManager] | None = None,
) -> float:
    """Bytes autograd keeps per token of a chunk for its backward pass, measured on a probe
    chunk of four sequences of max_length tokens (dropout as in training)."""
    length = encoder.config.max_length
    token = (tokens.pad_id + 1) % len(encoder.tokenizer)  # any real token: pad may be the last
    ids = [[token] * length for _ in range(4)]
    batch = (tokens.ragged if packed else tokens.pad)(ids, "document")
    batch = {k: v.to(encoder.device) for k, v in batch.items()}
    params = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), (autocast or nullcontext)():
        encoder(batch)
    return sum(seen.values()) / (4 * length)


def chunk_plan(
    encoder: Encoder,
    packed: bool,
    chunk_size: int,
    chunk_tokens: int | None,
    bytes_per_token: float,
) -> ChunkPlan:
    """Chunks as configured: `chunk_tokens` tokens each where given; else on a GPU as many
    tokens as GPU_CHUNK_SHARE of its free memory holds, and elsewhere `chunk_size` texts."""
    device = encoder.device
    cost = PASS_COST_TOKENS.get(device.type, PASS_COST_TOKENS["other"])
    if chunk_tokens:
        return ChunkPlan(None, chunk_tokens, packed, cost)
    if device.type != "cuda":
        return ChunkPlan(chunk_size, None, packed, cost)
    free, _ = torch.cuda.mem_get_info(device)
    weights = sum(p.numel() * p.element_size() for p in encoder.parameters())
    budget = GPU_CHUNK_SHARE * (free - 3 * weights) / max(bytes_per_token, 1.0)
    length = encoder.config.max_length
    tokens = int(min(MAX_CHUNK_TOKENS, max(MIN_CHUNK_TOKENS, budget)) // length * length)
    return ChunkPlan(None, max(tokens, length), packed, cost)


def chunk_tokens_bound(plan: ChunkPlan, max_length: int) -> int:
    """The most tokens a chunk of `plan` holds."""
    if plan.max_tokens:
        return plan.max_tokens
    return (plan.max_rows or 1) * max_length


def uncached_budget(encoder: Encoder, plan: ChunkPlan, bytes_per_token: float) -> float:
    """Bytes of activations a batch may keep at once, all its chunks in one graph: on a GPU
    one chunk's allowance (a batch within it is one chunk anyway), elsewhere
    CPU_BATCH_SHARE of the memory available now."""
    if encoder.device.type == "cuda":
        return (plan.max_tokens or 0) * bytes_per_token
    return CPU_BATCH_SHARE * available_memory()


def available_memory() -> float:
    """Bytes of memory this machine can give now without swapping (Linux: MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
