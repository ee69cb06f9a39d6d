"""Linear layers on weights pre-packed for oneDNN, put in place of a CPU copy's nn.Linear.

F.linear re-lays the weights out for oneDNN on every call; packing them once, as inductor's
freezing does, saves that work on every forward pass (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

# The attribute of every module of a model in which copy.mark_updated counts weight updates
# that bump no version counter.
GENERATION = "_cpt_weights_generation"


class PackedLinear(nn.Module):
    """nn.Linear on a weight reordered once into oneDNN's blocked layout, as inductor's
    freezing does: 1.0-1.5x faster bfloat16 matrix products on CPU than F.linear. With
    `gelu`, the exact GELU of the product is computed as oneDNN writes it (fuse_gelu)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        self.bias = None if bias is None else bias.detach()
        self.gelu = False

    @classmethod
    def of(cls, linear: nn.Linear) -> PackedLinear:
        """`linear`'s weights packed."""
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gelu:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "gelu", [], "none")
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def fuse_gelu(backbone: nn.Module) -> int:
    """Fold the exact GELU that follows a packed linear layer in a BERT-style feed-forward
    block (`dense`, then `intermediate_act_fn`) into the layer; returns how many were
    folded. The GELU pass over the block's 4x-wide activations was about 9% of encoding
    256-token texts; as oneDNN's post-op it runs on the product still in cache, from its
    float32 accumulator (closer to float32 than GELU of the bfloat16 product). A block
    whose fused output disagrees with the plain one on a probe is left as it is."""
    from transformers.activations import GELUActivation

    generator = torch.Generator().manual_seed(0)
    fused = 0
    for module in backbone.modules():
        dense = getattr(module, "dense", None)
        act = getattr(module, "intermediate_act_fn", None)
        if not (
            type(module).__name__.endswith("Intermediate")
            and isinstance(dense, PackedLinear)
            and type(act) is GELUActivation
            and act.act is F.gelu
        ):
            continue
        x = torch.randn(2, 3, dense.in_features, generator=generator, dtype=dense.packed.dtype)
        with torch.no_grad():
            expected = F.gelu(dense(x).float())
            dense.gelu = True
            got = dense(x).float()
        if agrees(got, expected):
            module.intermediate_act_fn = nn.Identity()
            fused += 1
        else:
            dense.gelu = False
    return fused


def agrees(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """A packed product's probe passes: within 1% of the largest expected value (bfloat16
    rounding of differently blocked sums stays far below; a wrong kernel goes far above)."""
    return bool((got.float() - expected.float()).abs().max() <= 1e-2 * expected.abs().max())


def probe_packed(
    layer: PackedLinear, weight: torch.Tensor, bias: torch.Tensor | None, generator: torch.Generator
) -> bool:
    """`layer` (GELU fused or not) agrees with F.linear on `weight` and `bias` for random
    inputs; False too where oneDNN cannot run it."""
    x = torch.randn(2, 3, layer.in_features, generator=generator, dtype=weight.dtype)
    with torch.no_grad():
        try:
            got = layer(x)
        except RuntimeError:  # oneDNN without this dtype or shape
            return False
        expected = F.linear(x, weight, bias).float()
    return agrees(got, F.gelu(expected) if layer.gelu else expected)


def pack_linears(backbone: nn.Module, unpacked: Collection[str] | None = None) -> list[str]:
    """Put PackedLinear layers in place of `backbone`'s nn.Linear ones, in place; returns
    the qualified names of those left as they are, where oneDNN cannot run them or
    disagrees with F.linear on a probe. `unpacked`, those names as the probes found them
    for the same model before (probes.py), packs the others without probing."""
    layers = [
        (module, f"{prefix}.{name}" if prefix else name, name, child)
        for prefix, module in backbone.named_modules()
        for name, child in module.named_children()
        if type(child) is nn.Linear
    ]
    if not torch.backends.mkldnn.is_available():
        return [full for _, full, _, _ in layers]
    # the probes' own generator: encoding must not move the caller's random numbers, and
    # whether the probes run depends on the cache
    generator = torch.Generator().manual_seed(0)
    left = []
    with torch.no_grad():
        for module, full, name, child in layers:
            if unpacked is not None and full in unpacked:
                left.append(full)
                continue
            fast = _packed(child, None if unpacked is not None else generator)
            if fast is None:
                left.append(full)
            else:
                setattr(module, name, fast)
    return left


def _packed(linear: nn.Linear, generator: torch.Generator | None) -> PackedLinear | None:
    """`linear` on packed weights; None where oneDNN cannot run it or, probed on random
    inputs from `generator` (None: no probe), disagrees with F.linear."""
    try:
        fast = PackedLinear.of(linear)
    except RuntimeError:  # oneDNN without this dtype or shape
        return None
    if generator is None or probe_packed(fast, linear.weight, linear.bias, generator):
        return fast
    return None


def is_packed(backbone: nn.Module) -> bool:
    """True for a copy with PackedLinear layers: on CPU it runs faster in eager mode than
    torch.compile makes it (docs/benchmarks.md), so `encode` does not compile it."""
    return any(isinstance(m, PackedLinear) for m in backbone.modules())


class _PackedProduct(torch.autograd.Function):
    """x @ weight.T + bias on the weight pre-packed for oneDNN, and its gradient for x on
    the transposed weight pre-packed too; the weight's gradient as F.linear's."""

    @staticmethod
    def forward(ctx, x, weight, bias, packed, packed_t):  # noqa: D102 (torch's Function API)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.packed_t = packed_t
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # grad @ weight, as F.linear(grad, weight.T)
            grad = grad.contiguous()
            grad_x = torch.ops.mkldnn._linear_pointwise(grad, ctx.packed_t(), None, "none", [], "")
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = rows.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b, None, None


class TrainingLinear(nn.Linear):
    """nn.Linear for training on CPU whose forward multiplies by its weight pre-packed for
    oneDNN, packed again whenever the weight changes (once per optimiser step): float32
    products 1.7-2.5x as fast as F.linear's for a BERT-sized layer here, about a fifth
    off a training step. The backward is F.linear's; under autocast, and off the CPU, it
    is nn.Linear."""

    _packed: torch.Tensor | None = None
    _packed_t: torch.Tensor | None = None
    _packed_key: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            x.device.type != "cpu"
            or x.dtype != weight.dtype
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling()
        ):
            return F.linear(x, weight, self.bias)
        key = (getattr(self, GENERATION, 0), weight._version, weight.data_ptr())
        if key != self._packed_key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
            self._packed_t, self._packed_key = None, key
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return _PackedProduct.apply(x, weight, self.bias, self._packed, self._transposed)
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "none", [], "")

    def __getstate__(self) -> dict:
        # copies (deepcopy, pickling) pack their own weights: oneDNN's packed tensors are
        # opaque and cannot be copied
        state = self.__dict__.copy()
        for name in ("_packed", "_packed_t", "_packed_key"):
            state.pop(name, None)
        return state

    def _transposed(self) -> torch.Tensor:
        """The weight transposed and packed, for the input's gradient (made on first use
        after the weight changed)."""
        if self._packed_t is None:
            weight_t = self.weight.detach().t().contiguous()
            self._packed_t = torch.ops.mkldnn._reorder_linear_weight(weight_t, None)
        return self._packed_t


def plain_linears(model: nn.Module) -> None:
    """Make `model`'s TrainingLinear layers nn.Linear again (a copy for inference packs its
    own), in place."""
    for module in model.modules():
        if isinstance(module, TrainingLinear):
            module.__class__ = nn.Linear
            for name in ("_packed", "_packed_t", "_packed_key"):
                module.__dict__.pop(name, None)


def use_training_linears(model: nn.Module) -> int:
    """Make `model`'s nn.Linear layers TrainingLinear in place (the same parameters, so an
    optimiser made before keeps them) where oneDNN runs them and agrees with F.linear on a
    probe; the number changed. CPU float32 models only."""
    first = next(model.parameters())
    if first.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return 0
    changed = 0
    for module in list(model.modules()):
        if type(module) is not nn.Linear or module.weight.dtype != torch.float32:
            continue
        x = torch.randn(2, 3, module.in_features)
        with torch.no_grad():
            expected = F.linear(x, module.weight, module.bias)
            module.__class__ = TrainingLinear
            try:
                got = module(x)
            except RuntimeError:  # oneDNN without this shape
                got = None
        if got is None or (got - expected).abs().max() > 1e-4 * expected.abs().max():
            module.__class__ = nn.Linear
            continue
        changed += 1
    return changed
