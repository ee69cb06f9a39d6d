"""The top k of a million scores without sorting them all: the same positions, in the same
order, as a stable argsort (ties in position order), which the search modes relied on."""

from __future__ import annotations

import numpy as np

from cpt_embed.search.query import best_positions


def test_best_positions_is_a_stable_argsort():
    rng = np.random.default_rng(0)
    for values in (rng.normal(size=1000), rng.integers(0, 5, 1000).astype(np.float32)):
        for k in (1, 7, 200, 999, 1000, 1500):
            np.testing.assert_array_equal(
                best_positions(values, k), np.argsort(-values, kind="stable")[:k]
            )
