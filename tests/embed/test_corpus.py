"""Embedding corpora of many shards: the local engine equals one `Encoder.encode`, re-runs
skip done shards and refuse other settings, the Ray engine equals the local one, and the
`cpt embed -o FOLDER` command."""

from __future__ import annotations

import gzip
import json
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cpt_embed import Encoder
from cpt_embed.cli import app
from cpt_embed.data.vectors import read_vectors
from cpt_embed.embed import corpus as module
from cpt_embed.embed.corpus import MANIFEST, EmbedSettings, embed_file, embed_shards
from cpt_embed.errors import InputError

SHARDS = {
    "a.jsonl": [f"first shard text number {i}" for i in range(7)],
    "b.parquet": [f"a parquet row, {'longer ' * i}than before" for i in range(5)],
    "sub/c.jsonl.gz": ["def f(x):\n    return x", "", "the last shard"],
}
OUTPUTS = {"a.jsonl": "a.parquet", "b.parquet": "b.parquet", "sub/c.jsonl.gz": "sub/c.parquet"}


def _ids(name: str, texts: list[str]) -> list[str]:
    return [f"{name.split('/')[-1].split('.')[0]}-{i}" for i in range(len(texts))]


@pytest.fixture
def corpus(tmp_path):
    """A folder of three shards: JSONL, Parquet and gzipped JSONL in a subfolder."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    for name, texts in SHARDS.items():
        ids = _ids(name, texts)
        if name.endswith(".parquet"):
            pq.write_table(pa.table({"doc": ids, "body": texts}), root / name)
            continue
        lines = "".join(
            json.dumps({"doc": i, "body": t}) + "\n" for i, t in zip(ids, texts, strict=True)
        )
        opener = gzip.open if name.endswith(".gz") else open
        with opener(root / name, "wt", encoding="utf-8") as handle:
            handle.write(lines)
    return root


def _settings(model, **changes) -> EmbedSettings:
    base = {"model": str(model), "dtype": "float32", "field": "body", "id_field": "doc"}
    return EmbedSettings(**{**base, **changes})


def test_local_engine_equals_one_encode_of_all_texts(tiny_bert, corpus, tmp_path):
    out = tmp_path / "vectors"
    run = embed_shards([corpus], out, _settings(tiny_bert, side="document"), batch_size=4)
    assert (run.shards, run.skipped, run.texts) == (3, 0, 15)
    texts = [t for shard in SHARDS.values() for t in shard]
    expected = Encoder.load(tiny_bert).encode(texts, side="document", dtype="float32")
    start = 0
    for name, shard in SHARDS.items():
        ids, vectors = read_vectors(out / OUTPUTS[name])
        assert ids == _ids(name, shard)
        np.testing.assert_allclose(vectors, expected[start : start + len(shard)], atol=1e-5)
        start += len(shard)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["side"] == "document" and manifest["model"] == str(tiny_bert.resolve())


def test_resume_recomputes_only_missing_shards_and_refuses_other_settings(
    tiny_bert, corpus, tmp_path, monkeypatch
):
    out = tmp_path / "vectors"
    settings = _settings(tiny_bert)
    embed_shards(
        [corpus / "a.jsonl", corpus / "b.parquet", str(corpus / "sub/*.gz")], out, settings
    )
    kept = {n: (out / n).stat().st_mtime_ns for n in ("a.parquet", "c.parquet")}
    (out / "b.parquet").unlink()
    read, original = [], module.read_texts

    def counting_read_texts(source, **kwargs):
        read.append(source.name)
        return original(source, **kwargs)

    monkeypatch.setattr(module, "read_texts", counting_read_texts)
    run = embed_shards([corpus / "a.jsonl", corpus / "b.parquet", corpus / "sub"], out, settings)
    assert (run.shards, run.skipped, read) == (3, 2, ["b.parquet"])
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert read_vectors(out / "b.parquet")[0] == _ids("b", SHARDS["b.parquet"])

    with pytest.raises(InputError, match=r"other settings \(side 'query' -> 'document'\)"):
        embed_shards([corpus], out, _settings(tiny_bert, side="document"))
    (out / MANIFEST).unlink()
    with pytest.raises(InputError, match="no manifest.json"):
        embed_shards([corpus], out, settings)


def test_shard_names_must_not_collide(tiny_bert, corpus, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(InputError, match="would both write a.parquet"):
        embed_shards([corpus, tmp_path / "other"], tmp_path / "out", _settings(tiny_bert))
    with pytest.raises(InputError, match="must lie outside input"):
        embed_shards([corpus], corpus / "vectors", _settings(tiny_bert))


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance on loopback with 2 CPUs, shut down after this module's tests."""
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


def test_ray_engine_equals_local_engine(tiny_bert, corpus, tmp_path, ray_cluster):
    (corpus / "empty.jsonl").write_text("")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    settings = _settings(tiny_bert)
    embed_shards([corpus], local, settings)
    run = embed_shards([corpus], distributed, settings, engine="ray", actors=2, batch_size=4)
    assert (run.shards, run.skipped, run.texts) == (4, 0, 15)
    for name in [*OUTPUTS.values(), "empty.parquet"]:
        ids, vectors = read_vectors(distributed / name)
        expected_ids, expected = read_vectors(local / name)
        assert ids == expected_ids
        assert vectors.shape == expected.shape == (len(ids), 32)
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert ray_cluster.is_initialized()  # a cluster it did not start is left running
    # a bad shard inside Ray still reads as the reader's one-line error
    (corpus / "bad.jsonl").write_text('{"text": "no body"}\n')
    with pytest.raises(InputError, match=r"^\S*bad.jsonl: line 1 has no field 'body'"):
        embed_shards([corpus], distributed, settings, engine="ray", actors=1)


def test_cli_embeds_shards_into_a_folder_and_resumes(tiny_bert, corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # the local engine never imports Ray
    runner = CliRunner()
    out = tmp_path / "vectors"
    args = ["embed", str(corpus), "-o", str(out), "-m", str(tiny_bert), "--field", "body"]
    result = runner.invoke(app, [*args, "--id-field", "doc"])
    assert result.exit_code == 0, result.output
    assert "embedded 15 texts in 3 shards" in result.output
    assert read_vectors(out / "a.parquet")[0] == _ids("a", SHARDS["a.jsonl"])
    result = runner.invoke(app, [*args, "--id-field", "doc"])
    assert result.exit_code == 0, result.output
    assert "in 0 shards" in result.output and "3 done before" in result.output
    for extra, message in [
        ([], "other settings (id_field 'doc' -> None)"),
        (["--engine", "ray"], "install cpt-embed[ray]"),
    ]:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    result = runner.invoke(app, ["embed", str(corpus), "-o", str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "pass a folder (no suffix) as -o" in result.output


def test_a_run_counts_the_seconds_its_progress_bar_counts_not_the_model_load(
    tiny_bert, corpus, tmp_path, monkeypatch
):
    """`cpt embed` prints texts/s over EmbedRun.seconds beside the bar's rate: the model's
    load (here a clock that jumps an hour meanwhile) is in neither."""
    load, clock, hours = module.load_encoder, time.perf_counter, [0]

    def slow_load(*args, **kwargs):
        hours[0] += 1
        return load(*args, **kwargs)

    monkeypatch.setattr(module, "load_encoder", slow_load)
    monkeypatch.setattr(time, "perf_counter", lambda: clock() + 3600 * hours[0])
    (tmp_path / "texts.txt").write_text("one\ntwo\n", encoding="utf-8")
    settings = _settings(tiny_bert, field="text", id_field=None)
    one = embed_file(tmp_path / "texts.txt", tmp_path / "v.npy", settings)
    shards = embed_shards([corpus], tmp_path / "out", _settings(tiny_bert))
    assert hours == [2]
    assert one.texts == 2 and one.seconds < 3600
    assert shards.texts == 15 and shards.seconds < 3600
