"""The backbone as `Encoder.encode` runs it: a copy with its weights cast once to the compute
dtype (bfloat16 on most CPUs); on CPU with the attention of `attention.py` and its linear
weights pre-packed for oneDNN; elsewhere optionally torch.compile'd.

Autocast, which training uses, casts every weight again on every forward pass; F.linear
re-lays the weights out for oneDNN on every call; SDPA's CPU flash kernel is slow for small
heads. Without the three, all-MiniLM-L6-v2 encodes 1.4-1.6x faster on CPU than with them,
and faster than torch.compile with frozen weights makes it (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.model.attention import RAGGED, Ragged, use_cpu_attention

T = TypeVar("T")
# How far (relative to the largest value) ragged hidden states may be from padded ones in
# the probe: bfloat16 rounding in differently shaped products stays below it (BERT: 0.0),
# a position off by one or a token attending to another sequence goes far beyond (0.3-1).
_PROBE_TOLERANCE = 0.005


def _weights_key(module: nn.Module) -> tuple:
    """Changes when the weights do: in-place updates (optimizer steps, load_state_dict) bump a
    tensor's version, moves and casts give it new storage."""
    return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in module.parameters())


class PackedLinear(nn.Module):
    """nn.Linear on a weight reordered once into oneDNN's blocked layout, as inductor's
    freezing does: 1.0-1.5x faster bfloat16 matrix products on CPU than F.linear."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def _pack_linears(backbone: nn.Module) -> None:
    """Put PackedLinear layers in place of `backbone`'s nn.Linear ones, in place; a layer
    stays as it is where oneDNN cannot run it or disagrees with F.linear on a probe."""
    if not torch.backends.mkldnn.is_available():
        return
    with torch.no_grad():
        for module in list(backbone.modules()):
            for name, child in list(module.named_children()):
                if type(child) is not nn.Linear:
                    continue
                try:
                    fast = PackedLinear(child)
                    x = torch.randn(2, 3, child.in_features, dtype=child.weight.dtype)
                    got = fast(x).float()
                except RuntimeError:  # oneDNN without this dtype or shape
                    continue
                expected = F.linear(x, child.weight, child.bias).float()
                if (got - expected).abs().max() <= 1e-2 * expected.abs().max():
                    setattr(module, name, fast)


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


def is_packed(backbone: nn.Module) -> bool:
    """True for a copy with PackedLinear layers: on CPU it runs faster in eager mode than
    torch.compile makes it (docs/benchmarks.md), so `encode` does not compile it."""
    return any(isinstance(m, PackedLinear) for m in backbone.modules())


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
        key = (_weights_key(backbone), dtype)
        if key != self._key:
            self._copy = None  # free the old copy before making the new one
            cast = copy.deepcopy(backbone).to(dtype).eval().requires_grad_(False)
            ragged = False
            if next(cast.parameters()).device.type == "cpu":
                ragged = use_cpu_attention(cast) and _takes_ragged_rows(cast)
                _pack_linears(cast)
            self._copy, self._key, self._ragged = cast, key, ragged
        return self._copy

    def ragged(self, backbone: nn.Module) -> bool:
        """True where `backbone` is the copy and it takes ragged rows of sequences
        (`DelimitedTokenizer.ragged`): its linear layers then never compute padding."""
        return backbone is self._copy and self._ragged


class InferenceCompiler:
    """Holds the compiled backbone; compiles again for another backbone or when the weights
    change (training between two encodes) and falls back to eager mode, with one warning,
    where compiling fails (no C++ compiler, an unsupported model)."""

    def __init__(self) -> None:
        self._module: nn.Module | None = None
        self._source: nn.Module | None = None
        self._key: tuple | None = None
        self.failed = False

    def module(self, backbone: nn.Module) -> nn.Module | None:
        """The compiled backbone, or None where compiling has failed before."""
        if self.failed:
            return None
        key = _weights_key(backbone)
        if self._module is None or backbone is not self._source or key != self._key:
            if self._module is not None:
                # Frozen weights are baked into the cached graphs: drop them all.
                torch._dynamo.reset()
            self._module = torch.compile(backbone, dynamic=True)
            self._source, self._key = backbone, key
        return self._module

    def run(self, compiled: Callable[[], T], eager: Callable[[], T]) -> T:
        """`compiled()`, or `eager()` from now on if compiling fails."""
        if not self.failed:
            import torch._inductor.config as inductor

            try:
                with inductor.patch(freezing=True):
                    return compiled()
            except Exception as err:  # compilers fail in many ways; eager mode still works
                self.failed = True
                self._module = None
                warnings.warn(
                    f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                    "embedding in eager mode",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return eager()
