"""The contrastive loss against a direct computation, and gradient caching against an
uncached full-batch step on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cpt_embed import Encoder
from cpt_embed.train.grad_cache import GradCache
from cpt_embed.train.loss import TAU_INIT, ContrastiveLoss


def _reference(x, y, scale, negatives=None):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    n = len(x)
    loss = 0.0
    for i in range(n):  # rows: x_i against every y and every hard negative
        columns = [y[j] for j in range(n)] + ([*negatives] if negatives is not None else [])
        logits = torch.stack([scale * x[i] @ F.normalize(c, dim=-1) for c in columns])
        loss = loss - torch.log_softmax(logits, 0)[i]
    for j in range(n):  # columns: y_j against every x
        logits = torch.stack([scale * y[j] @ x[i] for i in range(n)])
        loss = loss - torch.log_softmax(logits, 0)[j]
    return loss / (2 * n)


def test_loss_equals_the_definition():
    torch.manual_seed(0)
    x, y, negatives = torch.randn(6, 8), torch.randn(6, 8), torch.randn(4, 8)
    loss = ContrastiveLoss()
    assert loss.scale.item() == pytest.approx(20.0)
    torch.testing.assert_close(loss(x, y), _reference(x, y, 20.0))
    torch.testing.assert_close(loss(x, y, negatives=negatives), _reference(x, y, 20.0, negatives))


def test_temperature_is_learned_and_clamped():
    loss = ContrastiveLoss(tau_init=math.log(200.0))
    assert loss.scale.item() == pytest.approx(100.0)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    ContrastiveLoss()(x, y).backward()
    learned = ContrastiveLoss()
    learned(x, y).backward()
    assert learned.tau.grad is not None and learned.tau.grad.abs() > 0
    fixed = ContrastiveLoss(learn_tau=False)
    assert not fixed.tau.requires_grad
    assert pytest.approx(math.log(20.0)) == TAU_INIT


def test_identical_texts_are_not_negatives_of_each_other():
    torch.manual_seed(0)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    x[2] = x[0]  # pair 2 has the same query text as pair 0
    keys_x, keys_y = torch.tensor([7, 1, 7, 3]), torch.tensor([0, 1, 2, 3])
    masked = ContrastiveLoss()(x, y, x_keys=keys_x, y_keys=keys_y)
    plain = ContrastiveLoss()(x, y)
    assert masked < plain
    # masking equals dropping the other copy from each row and column by hand
    scale = 20.0
    xn, yn = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    rows = scale * xn @ yn.T
    rows[0, 2] = rows[2, 0] = float("-inf")
    cols = scale * yn @ xn.T
    cols[0, 2] = cols[2, 0] = float("-inf")
    target = torch.arange(4)
    expected = (F.cross_entropy(rows, target) + F.cross_entropy(cols, target)) / 2
    torch.testing.assert_close(masked, expected)


def _batches(encoder, n=12):
    xs = [f"query number {i} about topic {i % 5}" for i in range(n)]
    ys = [f"document {i} explains topic {i % 5} in some detail" for i in range(n)]
    return xs, ys


def _grads(encoder, loss_fn):
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    return grads, loss_fn.tau.grad.clone()


def _chunks(encoder, texts, side, size):
    return [encoder.tokenize(texts[i : i + size], side) for i in range(0, len(texts), size)]


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


def test_grad_cache_replays_dropout_exactly(tiny_bert):
    """With dropout on, the cached step equals chunk-by-chunk forwards kept in one graph:
    the re-forward replays each chunk's dropout masks."""
    encoder = Encoder.load(tiny_bert, device="cpu").train()
    xs, ys = _batches(encoder)
    sides = [_chunks(encoder, xs, "query", 5), _chunks(encoder, ys, "document", 5)]

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
