"""The embedding cache: keyed by exact weights, settings and texts; damaged entries recomputed."""

from __future__ import annotations

import numpy as np

from cpt_embed import Encoder
from cpt_embed.eval.cache import CachedEncoder, texts_fingerprint

TEXTS = ["one", "two", "three"]


def test_hits_after_the_first_call_and_results_are_identical(tiny_bert, tmp_path):
    cached = CachedEncoder(Encoder.load(tiny_bert), tmp_path, show_progress=False)
    first = cached.encode(TEXTS, "query")
    second = cached.encode(TEXTS, "query")
    np.testing.assert_array_equal(first, second)
    assert (cached.hits, cached.misses) == (1, 1)
    cached.encode(TEXTS, "document")
    cached.encode(TEXTS[:2], "query")
    assert cached.misses == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_damaged_entry_is_recomputed(tiny_bert, tmp_path):
    cached = CachedEncoder(Encoder.load(tiny_bert), tmp_path, show_progress=False)
    expected = cached.encode(TEXTS, "query")
    (entry,) = tmp_path.rglob("*.npy")
    entry.write_bytes(entry.read_bytes()[:50])  # as if cut off mid-write by another tool
    np.testing.assert_array_equal(cached.encode(TEXTS, "query"), expected)
    assert cached.misses == 2


def test_texts_fingerprint_is_order_and_boundary_sensitive():
    assert texts_fingerprint(["ab", "c"]) != texts_fingerprint(["a", "bc"])
    assert texts_fingerprint(["a", "b"]) != texts_fingerprint(["b", "a"])
