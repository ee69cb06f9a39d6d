"""Packed rows for training: a chunk's sequences end to end in one row, so that no linear
layer, norm or activation computes padding, on any device and with gradients.

Registered with transformers' attention interface as `cpt_packed`. Given a `Ragged` in its
keyword arguments, it re-pads queries, keys and values per sequence (an index gather,
differentiable), runs PyTorch's scaled-dot-product attention on the (sequences, heads,
longest, head_dim) layout (causal for decoder models, whose right padding then never reaches
a real token; a key padding mask for bidirectional ones; grouped-query attention through
SDPA's own `enable_gqa`), and packs the output back into the row. Without a `Ragged` it is
transformers' own SDPA path. The attention then costs what the chunk's longest sequence
costs per sequence; everything else costs the real tokens alone.

`enable_packed_training` switches a model to it only where a probe shows the model gives
packed rows the hidden states and gradients it gives them padded: it must pass keyword
arguments down to its attention and number positions from 0 per sequence (RoBERTa-style
position ids do not), and have no sliding windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cpt_embed.model.runtime import dropout as fast
from cpt_embed.model.runtime.attention import RAGGED, Ragged, sdpa

NAME = "cpt_packed"
# How far (relative to the largest value) packed hidden states and gradients may be from
# padded ones in the probe: float32 rounding in other shapes stays far below it; a position
# off by one or a token attending to another sequence goes far beyond (0.3-1).
_PROBE_TOLERANCE = 1e-3


def packed_attention(
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
    """Attention of (batch, heads, tokens, head_dim) inputs as transformers' attention
    functions return it, (batch, tokens, heads, head_dim); a `Ragged` in kwargs[RAGGED]
    makes each sequence of the one packed row attend to itself alone."""
    ragged = kwargs.pop(RAGGED, None)
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", False))
    if ragged is None:
        if _math_dropout(query, dropout) and not causal:
            out = _math_attention(query, key, value, attention_mask, dropout, scaling, False)
            return out.transpose(1, 2), None
        return sdpa()(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    if query.shape[0] != 1 or any(
        kwargs.get(k) is not None for k in ("sliding_window", "position_bias", "softcap", "sinks")
    ):
        raise ValueError("packed rows take one row and plain attention (no windows or biases)")
    q, k, v = ragged.pad(query), ragged.pad(key), ragged.pad(value)
    mask = None if causal or ragged.full else ragged.valid[:, None, None, :]
    if _math_dropout(q, dropout):
        out = _math_attention(q, k, v, mask, dropout, scaling, causal)
    else:
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=causal,
            scale=scaling,
            enable_gqa=k.shape[1] != q.shape[1],
        )
    return ragged.unpad(out.transpose(1, 2)), None


def _math_dropout(query: torch.Tensor, dropout: float) -> bool:
    """True where attention dropout runs on CPU (training): SDPA's own draws a bernoulli
    per score. With or without gradients alike, so that a cached step's replay of a chunk
    draws the same masks as its first pass."""
    return bool(dropout) and query.device.type == "cpu"


def _math_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout_p: float,
    scale: float | None,
    causal: bool,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask) with the fast dropout on the probabilities, times v;
    (batch, heads, width, dim) in and out."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (scale or q.shape[-1] ** -0.5)
    if causal:
        width = q.shape[2]
        upper = torch.ones(width, width, dtype=torch.bool, device=q.device).triu_(1)
        scores = scores.masked_fill(upper, float("-inf"))
    if mask is not None:
        scores = (
            scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        )
    return torch.matmul(fast.dropout(torch.softmax(scores, dim=-1), dropout_p), v)


def _packed_mask(**kwargs) -> torch.Tensor | None:
    """The mask transformers builds for `cpt_packed`: none for a packed row (its attention
    masks per sequence itself, where an (tokens x tokens) mask would cost memory), SDPA's
    for a padded batch."""
    if kwargs.get("attention_mask") is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(**kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, _packed_mask)


def enable_packed_training(backbone: nn.Module) -> bool:
    """Switch `backbone` from SDPA to `packed_attention` if a probe shows packed rows give it
    the hidden states and gradients of padded batches; False (and the model as it was)
    otherwise."""
    config = getattr(backbone, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", NAME):
        return False
    if not getattr(backbone, "_can_set_attn_implementation", lambda: False)():
        return False
    _register()
    previous = config._attn_implementation
    backbone.set_attn_implementation(NAME)
    if config._attn_implementation == NAME and _probe(backbone):
        return True
    backbone.set_attn_implementation(previous)
    return False


def _probe(backbone: nn.Module) -> bool:
    """Hidden states and input-embedding gradients of three sequences, packed and padded
    (right), without dropout, in float32 where the weights are."""
    lengths = [70, 3, 45]  # past small sliding windows, which masks would have to apply
    vocab = int(getattr(backbone.config, "vocab_size", 2))
    device = next(backbone.parameters()).device
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, vocab, (sum(lengths),), generator=generator)
    ragged = Ragged.of(lengths, sum(lengths) + 2).to(device)
    padded = torch.zeros(ragged.valid.shape, dtype=torch.long, device=device)
    padded[ragged.valid] = tokens.to(device)
    row = torch.cat([tokens, tokens.new_zeros(2)])[None].to(device)
    embed = backbone.get_input_embeddings()
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad():
            padded_in = embed(padded).detach().requires_grad_()
            packed_in = embed(row).detach().requires_grad_()
            expected = backbone(inputs_embeds=padded_in, attention_mask=ragged.valid.long())
            got = backbone(
                inputs_embeds=packed_in, position_ids=ragged.positions[None], **{RAGGED: ragged}
            )
            expected = expected.last_hidden_state[ragged.valid].float()
            got = got.last_hidden_state[0, : sum(lengths)].float()
            weights = torch.randn(got.shape, generator=generator).to(device)
            # gradients of the inputs alone: the weights' .grad stay as they were
            (want_grad,) = torch.autograd.grad((expected * weights).sum(), padded_in)
            (got_grad,) = torch.autograd.grad((got * weights).sum(), packed_in)
    except Exception:  # whatever the model makes of a packed row, padded chunks still work
        return False
    finally:
        backbone.train(was_training)
    want_grad = want_grad[ragged.valid].float()
    got_grad = got_grad[0, : sum(lengths)].float()
    return _close(got, expected) and _close(got_grad, want_grad)


def _close(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((got - expected).abs().max() <= _PROBE_TOLERANCE * expected.abs().max())
