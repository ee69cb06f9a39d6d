"""Fusing dense and lexical scores: the weight's ends are the two retrievers, RRF is the sum
of reciprocal ranks, and every candidate of either retriever is scored."""

from __future__ import annotations

import numpy as np
import pytest

from cpt_embed.model.fusion import RRF_K, candidates, fuse


def test_the_weight_ends_are_each_retriever_alone():
    rng = np.random.default_rng(0)
    dense, lexical = rng.standard_normal(50), rng.gamma(2.0, size=50)
    by = lambda scores: list(np.argsort(-scores, kind="stable"))  # noqa: E731
    assert by(fuse(dense, lexical, weight=1.0)) == by(dense)
    assert by(fuse(dense, lexical, weight=0.0)) == by(lexical)
    mixed = fuse(dense, lexical, weight=0.5)
    assert mixed.min() >= 0.0 and mixed.max() <= 1.0
    assert by(mixed) not in (by(dense), by(lexical))


def test_rrf_is_the_sum_of_reciprocal_ranks():
    dense = np.array([0.9, 0.1, 0.5])  # ranks 1, 3, 2
    lexical = np.array([0.0, 7.0, 3.0])  # ranks 3, 1, 2
    expected = [1 / (RRF_K + 1) + 1 / (RRF_K + 3), 1 / (RRF_K + 3) + 1 / (RRF_K + 1)]
    expected.append(2 / (RRF_K + 2))
    np.testing.assert_allclose(fuse(dense, lexical, fusion="rrf"), expected, rtol=1e-6)


def test_constant_scores_carry_no_information_and_no_nan():
    fused = fuse(np.array([0.3, 0.3]), np.array([2.0, 1.0]), weight=0.5)
    assert np.isfinite(fused).all() and fused[0] > fused[1]
    assert fuse(np.array([]), np.array([])).shape == (0,)


def test_candidates_are_the_union_dense_first():
    assert candidates(np.array([4, 2, 9]), np.array([9, 7, 4, 1])).tolist() == [4, 2, 9, 7, 1]


@pytest.mark.parametrize("kwargs", [{"fusion": "max"}, {"weight": 1.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        fuse(np.ones(3), np.ones(3), **kwargs)
