"""The backbone as `Encoder.encode` runs it below float32: a copy with its weights cast once
to the compute dtype (bfloat16 on most CPUs); on CPU with the attention of `attention.py`,
ragged rows where the model takes them, and its linear weights pre-packed for oneDNN.

Autocast, which training uses, casts every weight again on every forward pass; F.linear
re-lays the weights out for oneDNN on every call; SDPA's CPU flash kernel is slow for small
heads. Without the three, all-MiniLM-L6-v2 encodes 1.4-1.6x faster on CPU than with them,
and faster than torch.compile with frozen weights makes it (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable

import torch
from torch import nn

from cpt_embed.model.runtime.attention import RAGGED, Ragged, use_cpu_attention
from cpt_embed.model.runtime.packing import GENERATION, fuse_gelu, pack_linears, plain_linears
from cpt_embed.model.runtime.probes import Probes, Weights, probe_key, read_probes, write_probes

# How far (relative to the largest value) ragged hidden states may be from padded ones in
# the probe: bfloat16 rounding in differently shaped products stays below it (BERT: 0.0),
# a position off by one or a token attending to another sequence goes far beyond (0.3-1).
_PROBE_TOLERANCE = 0.005
# The attribute of a backbone that holds its `Weights` (remember_weights).
WEIGHTS = "_cpt_weights_source"


def weights_key(module: nn.Module) -> tuple:
    """Changes when the weights do: in-place updates (load_state_dict, most optimisers) bump
    a tensor's version, moves and casts give it new storage, and `mark_updated` counts the
    updates that bump no version (fused optimisers)."""
    versions = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in module.parameters())
    return getattr(module, GENERATION, 0), versions


def mark_updated(model: nn.Module) -> None:
    """Say that `model`'s weights changed in place where their version counters may not show
    it (torch.optim's fused AdamW leaves them as they were), so that what was made from
    them (the cast inference copy, the compiled model, packed weights) is made again."""
    for module in model.modules():
        setattr(module, GENERATION, getattr(module, GENERATION, 0) + 1)


def remember_weights(backbone: nn.Module, files: Iterable[str | os.PathLike]) -> None:
    """Note that `backbone`'s weights, as they are now, are those read from `files`: until
    they change, the probes of its inference copy are looked up by the files (probes.py)
    instead of run again in every process."""
    setattr(backbone, WEIGHTS, Weights.of(files, weights_key(backbone)))


def _weights(backbone: nn.Module) -> Weights | None:
    """The files `backbone`'s weights were read from, while they are unchanged since."""
    weights = getattr(backbone, WEIGHTS, None)
    if isinstance(weights, Weights) and weights.key == weights_key(backbone):
        return weights
    return None


def _takes_ragged_rows(backbone: nn.Module) -> bool:
    """True where the model gives sequences in a ragged row the hidden states it gives them
    padded: it passes keyword arguments through to its attention and numbers positions
    from 0 (RoBERTa-style position ids, for one, do not)."""
    lengths = [70, 3, 45]  # past small sliding windows, which masks would have to apply
    vocab = int(getattr(backbone.config, "vocab_size", 2))
    tokens = torch.randint(1, vocab, (sum(lengths),), generator=torch.Generator().manual_seed(0))
    ragged = Ragged.of(lengths, sum(lengths) + 2)
    padded = torch.zeros(ragged.valid.shape, dtype=torch.long)
    padded[ragged.valid] = tokens
    row = torch.cat([tokens, tokens.new_zeros(2)])[None]
    try:
        with torch.inference_mode():
            expected = backbone(input_ids=padded, attention_mask=ragged.valid.long())
            got = backbone(input_ids=row, position_ids=ragged.positions[None], **{RAGGED: ragged})
    except Exception:  # whatever the model makes of a ragged row, padded batches still work
        return False
    expected = expected.last_hidden_state[ragged.valid].float()
    got = got.last_hidden_state[0, : sum(lengths)].float()
    return bool((got - expected).abs().max() <= _PROBE_TOLERANCE * expected.abs().max())


class InferenceCopy:
    """Holds the backbone cast to a lower precision, on CPU with `cpu_attention` and pre-packed
    linear weights where they work; made again when the weights change."""

    def __init__(self) -> None:
        self._copy: nn.Module | None = None
        self._key: tuple | None = None
        self._ragged = False

    def backbone(self, backbone: nn.Module, dtype: torch.dtype) -> nn.Module:
        """`backbone` itself in float32, else the copy."""
        if dtype == torch.float32:
            return backbone
        key = (weights_key(backbone), dtype)
        if key != self._key:
            self._copy = None  # free the old copy before making the new one
            # each weight cast on the way: copying the float32 ones first cost a fresh process
            # 0.2-0.3 s (the pages of a second float32 model)
            cast_weights = {
                id(p): nn.Parameter(p.detach().to(dtype), requires_grad=False)
                for p in backbone.parameters()
                if p.is_floating_point()
            }
            cast = copy.deepcopy(backbone, cast_weights)
            plain_linears(cast)
            cast = cast.to(dtype).eval().requires_grad_(False)
            ragged = False
            if next(cast.parameters()).device.type == "cpu":
                ragged = _cpu_copy(backbone, cast, dtype)
            self._copy, self._key, self._ragged = cast, key, ragged
        return self._copy

    def ragged(self, backbone: nn.Module) -> bool:
        """True where `backbone` is the copy and it takes ragged rows of sequences
        (`DelimitedTokenizer.ragged`): its linear layers then never compute padding."""
        return backbone is self._copy and self._ragged


def _cpu_copy(backbone: nn.Module, cast: nn.Module, dtype: torch.dtype) -> bool:
    """Give the CPU copy `cast` of `backbone` the CPU attention and pre-packed linear
    weights; True where it takes ragged rows. The probes run once per model, machine and
    versions where the weights are a file's (probes.py), else every time."""
    attention = use_cpu_attention(cast)
    weights = _weights(backbone)
    key = None if weights is None else probe_key(backbone, dtype, weights)
    known = None if key is None else read_probes(key)
    ragged = attention and (_takes_ragged_rows(cast) if known is None else known.ragged)
    unpacked = pack_linears(cast, unpacked=None if known is None else known.unpacked)
    fuse_gelu(cast)
    if known is None and key is not None:
        write_probes(key, Probes(ragged, tuple(unpacked)))
    return ragged
