"""Our numbers for the default model against the published ones (MTEB leaderboard, which
the sbert.net model table quotes for STS-B)."""

from __future__ import annotations

import pytest

from cpt_embed.eval import evaluate


def test_minilm_stsb_matches_the_published_spearman(shared_data):
    report = evaluate("default", ["stsb"], shared_data, cache_dir=None, show_progress=False)
    assert report.results[0].score == pytest.approx(82.03, abs=0.3)


@pytest.mark.slow
def test_minilm_sts12_to_16_match_mteb(shared_data):
    published = {"sts12": 72.37, "sts13": 80.60, "sts14": 75.59, "sts15": 85.39, "sts16": 78.99}
    report = evaluate("default", list(published), shared_data, cache_dir=None, show_progress=False)
    for result in report.results:
        assert result.score == pytest.approx(published[result.task], abs=0.1), result.task
