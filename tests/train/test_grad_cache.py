"""Gradient caching against an uncached full-batch step on a tiny model: the same loss
and gradients, dropout replayed exactly, hard negatives included."""

from __future__ import annotations

import pytest
import torch

from cpt_embed import Encoder
from cpt_embed.model.runtime.dropout import use_fast_dropout
from cpt_embed.model.runtime.packed import enable_packed_training
from cpt_embed.train.grad_cache import GradCache
from cpt_embed.train.loss import ContrastiveLoss


def _batches(encoder, n=12):
    xs = [f"query number {i} about topic {i % 5}" for i in range(n)]
    ys = [f"document {i} explains topic {i % 5} in some detail" for i in range(n)]
    return xs, ys


def _grads(encoder, loss_fn):
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    return grads, loss_fn.tau.grad.clone()


def _chunks(encoder, texts, side, size, packed=False):
    """Chunks of `size` texts in order: padded batches, or packed rows."""
    sequences = encoder.tokens.encode(texts, side)
    build = encoder.tokens.ragged if packed else encoder.tokens.pad
    return [build(sequences[i : i + size], side) for i in range(0, len(texts), size)]


@pytest.mark.parametrize(
    "chunk, device",
    [(1, "cpu"), (5, "cpu"), (12, "cpu"), pytest.param(5, "cuda", marks=pytest.mark.cuda)],
)
def test_grad_cache_equals_the_full_batch_step(tiny_bert, chunk, device):
    encoder = Encoder.load(tiny_bert, device=device).eval()  # no dropout: one full batch
    xs, ys = _batches(encoder)
    loss_fn = ContrastiveLoss().to(device)
    full = loss_fn(
        encoder(encoder.tokenize(xs, "query")), encoder(encoder.tokenize(ys, "document"))
    )
    full.backward()
    expected, expected_tau = _grads(encoder, loss_fn)
    encoder.zero_grad()

    loss_fn = ContrastiveLoss().to(device)
    sides = [_chunks(encoder, xs, "query", chunk), _chunks(encoder, ys, "document", chunk)]
    cached = GradCache(encoder).step(sides, loss_fn)
    got, got_tau = _grads(encoder, loss_fn)
    torch.testing.assert_close(cached, full.detach())
    torch.testing.assert_close(got_tau, expected_tau)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("fast", [False, True])
def test_grad_cache_replays_dropout_exactly(tiny_bert, fast, packed):
    """With dropout on (PyTorch's, or the fast masks training uses on CPU; hidden states and
    attention probabilities alike), the cached step equals chunk-by-chunk forwards kept in
    one graph: the re-forward replays each chunk's dropout masks."""
    encoder = Encoder.load(tiny_bert, device="cpu").train()
    if fast:
        assert use_fast_dropout(encoder.backbone) > 0
    if packed:
        assert enable_packed_training(encoder.backbone)
    xs, ys = _batches(encoder)
    sides = [_chunks(encoder, xs, "query", 5, packed), _chunks(encoder, ys, "document", 5, packed)]

    torch.manual_seed(3)
    loss_fn = ContrastiveLoss()
    x = torch.cat([encoder(c) for c in sides[0]])
    y = torch.cat([encoder(c) for c in sides[1]])
    reference = loss_fn(x, y)
    reference.backward()
    expected, expected_tau = _grads(encoder, loss_fn)
    encoder.zero_grad()

    torch.manual_seed(3)
    loss_fn = ContrastiveLoss()
    cached = GradCache(encoder).step(sides, loss_fn)
    got, got_tau = _grads(encoder, loss_fn)
    torch.testing.assert_close(cached, reference.detach())
    torch.testing.assert_close(got_tau, expected_tau)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)
    torch.manual_seed(4)
    other = ContrastiveLoss()(
        torch.cat([encoder(c) for c in sides[0]]), torch.cat([encoder(c) for c in sides[1]])
    )
    assert not torch.isclose(other, reference)  # dropout really is on


def test_grad_cache_with_hard_negatives(tiny_bert):
    encoder = Encoder.load(tiny_bert, device="cpu").eval()
    xs, ys = _batches(encoder, n=6)
    negs = [f"unrelated text {i}" for i in range(6)]
    loss_fn = ContrastiveLoss()
    full = loss_fn(
        encoder(encoder.tokenize(xs, "query")),
        encoder(encoder.tokenize(ys, "document")),
        negatives=encoder(encoder.tokenize(negs, "document")),
    )
    full.backward()
    expected, _ = _grads(encoder, loss_fn)
    encoder.zero_grad()
    sides = [
        _chunks(encoder, t, side, 4)
        for t, side in ((xs, "query"), (ys, "document"), (negs, "document"))
    ]
    cached = GradCache(encoder).step(sides, ContrastiveLoss())
    got, _ = _grads(encoder, loss_fn)
    torch.testing.assert_close(cached, full.detach())
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)
