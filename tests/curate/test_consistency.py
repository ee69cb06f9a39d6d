import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.curate.consistency import consistency_filter
from cpt_embed.curate.pairs import PairSet
from cpt_embed.curate.steps import Curation, filter_pairs
from cpt_embed.data.shards import pair_files, read_shard
from cpt_embed.errors import InputError

FP32 = Curation(dtype="float32", show_progress=False)


def _unit(rng, n, dim=16):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pair_set(x, y, groups, y_keys=None):
    n = len(x)
    y_keys = np.arange(n, 2 * n) if y_keys is None else np.asarray(y_keys)
    names = [f"g{i}" for i in range(max(groups) + 1)]
    return PairSet(np.asarray(groups), names, np.arange(n), y_keys, x, y, {})


def _brute_force_keep(pairs: PairSet, top_k: int) -> np.ndarray:
    """y in the top k: fewer than k distinct other documents of the group score above it."""
    keep = np.zeros(len(pairs), dtype=bool)
    for i in range(len(pairs)):
        same = pairs.groups == pairs.groups[i]
        scores = pairs.y[same] @ pairs.x[i]
        keys = pairs.y_keys[same]
        positive = pairs.y[i] @ pairs.x[i]
        above = {
            k for k, s in zip(keys, scores, strict=True) if s > positive and k != pairs.y_keys[i]
        }
        keep[i] = len(above) < top_k
    return keep


@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_the_filter_keeps_what_a_brute_force_ranking_keeps(top_k):
    rng = np.random.default_rng(top_k)
    x = _unit(rng, 300)
    y = _unit(rng, 300) + 0.6 * x  # about half the positives rank first, many do not
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    pairs = _pair_set(x, y, rng.integers(0, 3, 300).tolist())
    keep, counts = consistency_filter(pairs, top_k=top_k, pool=1000)
    np.testing.assert_array_equal(keep, _brute_force_keep(pairs, top_k))
    assert 0 < keep.sum() < len(keep)
    for g, name in enumerate(pairs.group_names):
        rows = pairs.groups == g
        assert (counts[name].kept, counts[name].dropped) == (keep[rows].sum(), (~keep[rows]).sum())


def test_a_duplicate_of_the_positive_counts_as_the_positive():
    rng = np.random.default_rng(0)
    x = _unit(rng, 3)
    y = np.stack([x[1], x[0], x[2]])  # pair 0's y is pair 1's x: ranked below pair 1's y
    y[1] = x[0]  # pair 1's y equals pair 0's ... and is the same text as pair 0's y
    pairs = _pair_set(x, y, [0, 0, 0], y_keys=[7, 7, 8])
    keep, _ = consistency_filter(pairs, top_k=1, pool=10)
    assert keep[0] and keep[1]


def test_pools_smaller_than_a_group_still_rank_each_y_in_its_own_pool():
    """A y equal to its x ranks first in any pool; a y opposite to its x ranks last."""
    rng = np.random.default_rng(1)
    x = _unit(rng, 500)
    y = x.copy()
    y[::2] = -x[::2]
    pairs = _pair_set(x, y, [0] * 500)
    keep, counts = consistency_filter(pairs, top_k=1, pool=7)
    np.testing.assert_array_equal(keep, np.arange(500) % 2 == 1)
    assert (counts["g0"].kept, counts["g0"].dropped) == (250, 250)


@pytest.mark.parametrize(("top_k", "pool"), [(0, 10), (5, 5)])
def test_impossible_settings_are_refused(top_k, pool):
    rng = np.random.default_rng(0)
    pairs = _pair_set(_unit(rng, 4), _unit(rng, 4), [0] * 4)
    with pytest.raises(InputError, match="--"):
        consistency_filter(pairs, top_k=top_k, pool=pool)


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_filtering_real_pairs_drops_mismatched_ones(sts_pair_file, tmp_path):
    """STS-B paraphrase pairs plus pairs whose y belongs to another pair: the default model
    keeps nearly all of the first and drops nearly all of the second."""
    good = _lines(sts_pair_file)
    noise = [
        {**good[i], "y": good[(i + 97) % len(good)]["y"], "noise": True}
        for i in range(0, len(good), 4)
    ]
    (tmp_path / "mixed.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in good + noise), encoding="utf-8"
    )
    report = filter_pairs(
        tmp_path / "mixed.jsonl",
        tmp_path / "out",
        FP32,
        top_k=2,
        pool=100,
    )
    kept = [r for f in pair_files(tmp_path / "out") for r in read_shard(f)]
    kept_noise = sum(1 for r in kept if r.get("noise"))
    assert kept_noise <= len(noise) // 10, kept_noise  # STS-B has near-duplicate topics
    assert len(kept) - kept_noise >= 0.9 * len(good)
    assert report.kept == len(kept) and report.kept + report.dropped == len(good) + len(noise)
    saved = json.loads((tmp_path / "out" / "curation.json").read_text())
    assert set(saved["groups"]) == {"repo-0", "repo-1"}
    assert sum(g["kept"] for g in saved["groups"].values()) == len(kept)


def test_the_command_resumes_an_interrupted_run(sts_pair_file, tmp_path, monkeypatch):
    import cpt_embed.data.shards as shards

    flags = ["--pool", "50", "--dtype", "float32", "--shard-size", "40"]
    whole = CliRunner().invoke(
        app, ["pairs", "filter", str(sts_pair_file), "-o", str(tmp_path / "whole"), *flags]
    )
    assert whole.exit_code == 0, whole.output
    assert "consistency filter" in whole.output and "repo-0" in whole.output

    real_write, written = shards._write_shard, []

    def crash_after_two(path, records, fmt):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        real_write(path, records, fmt)

    monkeypatch.setattr(shards, "_write_shard", crash_after_two)
    out = tmp_path / "resumed"
    args = ["pairs", "filter", str(sts_pair_file), "-o", str(out), *flags]
    assert CliRunner().invoke(app, args).exit_code != 0
    monkeypatch.setattr(shards, "_write_shard", real_write)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    assert CliRunner().invoke(app, [*args, "--resume"]).exit_code == 0

    def records(folder):
        return [r for f in pair_files(folder) for r in read_shard(f)]

    assert records(out) == records(tmp_path / "whole")
    assert len(written) == 2
