"""Bidirectional attention for inference on CPU, registered with transformers' attention
interface as `cpt_cpu`.

PyTorch's CPU flash-attention kernel reaches 35-110 GFLOP/s for BERT-sized heads (head
dimension 32) on this project's machine: at 256 tokens all-MiniLM-L6-v2 spent nearly half
its time there. Two batched matrix products and a softmax over a few sequences at a time,
sized so that one group's scores stay in cache, run 1.4-1.5x faster up to 256 tokens
(`python benchmarks/kernels.py`, docs/benchmarks.md). Anything else (longer sequences,
gradients, causal or grouped-query attention, dropout, biases, GPUs, code being compiled)
goes to transformers' own SDPA path.
"""

from __future__ import annotations

import torch
from torch import nn

NAME = "cpt_cpu"
# Attention scores per group of sequences (heads x queries x keys): about 2 MiB in
# bfloat16, which stays in a core's L2 cache.
_SCORES_PER_GROUP = 1 << 20


def _sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def cpu_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """softmax(q·kᵀ·scaling + mask)·v for (batch, heads, tokens, head_dim) inputs, returned as
    (batch, tokens, heads, head_dim) as transformers' attention functions return it."""
    usual = (
        query.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not dropout
        and not is_causal
        and not getattr(module, "is_causal", False)
        and key.shape[1] == query.shape[1]
        and not any(kwargs.get(k) is not None for k in ("position_bias", "softcap", "sinks"))
        and (attention_mask is None or attention_mask.dim() == 4)
        # one sequence's scores must fit in cache; past that (512 tokens) flash is faster
        and query.shape[1] * query.shape[2] * key.shape[2] <= _SCORES_PER_GROUP
    )
    if not usual:
        return _sdpa()(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    batch, heads, tokens, dim = query.shape
    scaling = dim**-0.5 if scaling is None else scaling
    group = max(1, _SCORES_PER_GROUP // (heads * tokens * key.shape[2]))
    out = query.new_empty(batch, tokens, heads, dim)
    for start in range(0, batch, group):
        rows = slice(start, start + group)
        scores = torch.matmul(query[rows], key[rows].transpose(-1, -2)).mul_(scaling)
        if attention_mask is not None:
            mask = attention_mask[rows]
            if mask.dtype == torch.bool:
                scores.masked_fill_(~mask, float("-inf"))
            else:
                scores.add_(mask)
        weights = torch.softmax(scores, dim=-1)
        out[rows] = torch.matmul(weights, value[rows]).transpose(1, 2)
    return out, None


def use_cpu_attention(backbone: nn.Module) -> bool:
    """Switch a transformers model from SDPA to `cpu_attention`; False where the model does
    not use SDPA or cannot switch (its attention is then left as it was)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = getattr(backbone, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if not getattr(backbone, "_can_set_attn_implementation", lambda: False)():
        return False
    AttentionInterface.register(NAME, cpu_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    backbone.set_attn_implementation(NAME)
    return config._attn_implementation == NAME
