"""The contrastive loss against a direct computation: the definition, the learned and
clamped temperature, and identical texts masked rather than taken as negatives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

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


def _masked_reference(x, y, scale, margin, negatives):
    """Row by row: drop each negative scored above the positive minus the margin."""
    x, y, n = (F.normalize(t, dim=-1) for t in (x, y, negatives))
    columns = torch.cat([y, n])
    total = 0.0
    for i in range(len(x)):
        for anchor, candidates in ((x[i], columns), (y[i], x)):
            cos = candidates @ anchor
            kept = [j for j in range(len(cos)) if j == i or cos[j] <= cos[i] - margin]
            total += F.cross_entropy((scale * cos[kept])[None], torch.tensor([kept.index(i)]))
    return total / (2 * len(x))


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.3])
def test_false_negatives_scored_near_the_positive_are_masked(margin):
    torch.manual_seed(0)
    x, y, negatives = torch.randn(8, 16), torch.randn(8, 16), torch.randn(16, 16)
    y[3] = x[5] + 0.1 * torch.randn(16)  # an unlabeled positive of x[5]
    loss_fn = ContrastiveLoss(false_negative_margin=margin)
    loss = loss_fn(x, y, negatives=negatives)
    expected = _masked_reference(x, y, loss_fn.scale.detach(), margin, negatives)
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert loss.item() < ContrastiveLoss()(x, y, negatives=negatives).item()


def test_a_margin_past_every_negative_leaves_nothing_to_learn():
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    assert ContrastiveLoss(false_negative_margin=-2.0)(x, y).item() > 0
    assert ContrastiveLoss(false_negative_margin=2.0)(x, y).item() == pytest.approx(0.0, abs=1e-6)
