"""The token cache of pair files: the ids and keys it stores are what the tokenizer and
key_of give, a second read tokenizes nothing, what decides the ids (tokenizer settings, the
file's contents) decides the folder, bad records leave no folder, and PairStore's checks
and lookups over the cached files."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from cpt_embed import Encoder
from cpt_embed.errors import InputError
from cpt_embed.model.tokenize import DelimitedTokenizer
from cpt_embed.train import tokens as tokens_module
from cpt_embed.train.data import PairStore
from cpt_embed.train.sources import Source
from cpt_embed.train.tokens import cache_folder, key_of, tokenized, tokenizer_fingerprint


@pytest.fixture(scope="module")
def tokens(tiny_bert) -> DelimitedTokenizer:
    encoder = Encoder.load(
        tiny_bert,
        device="cpu",
        max_length=24,
        delimiters={"query": ("[", "]"), "document": ("{", "}")},
    )
    return encoder.tokens


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("CPT_CACHE", str(root))
    return root


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _records(n: int, negatives: int = 0) -> list[dict]:
    records = []
    for i in range(n):
        record = {
            "x": f"question {i % 4} " + "about rivers " * (i % 3),
            "y": f"answer {i} " + "that explains a lot " * (i % 5),
        }
        if negatives:
            record["neg"] = [f"wrong answer {i}-{j} " + "noise " * j for j in range(negatives)]
        records.append(record)
    return records


def _with(tokens: DelimitedTokenizer, **changes) -> DelimitedTokenizer:
    return DelimitedTokenizer(tokens.tokenizer, dataclasses.replace(tokens.config, **changes))


def _tokenize(path: Path, tokens: DelimitedTokenizer, negatives: str | None = None):
    return tokenized(path, tokens, tokenizer_fingerprint(tokens), negatives)


def _cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_cached_ids_and_keys_are_the_tokenizers_and_key_of(tokens, tmp_path):
    records = _records(9, negatives=3)
    records[5]["x"] = records[1]["x"]  # a repeated text
    path = _write(tmp_path / "pairs.jsonl", records)
    pairs = _tokenize(path, tokens, "neg")
    assert len(pairs) == 9 and pairs.k == 3
    for i, record in enumerate(records):
        assert pairs.x.sequence(i).tolist() == tokens.encode([record["x"]], "query")[0]
        assert pairs.y.sequence(i).tolist() == tokens.encode([record["y"]], "document")[0]
        assert pairs.x.length(i) == len(pairs.x.sequence(i))
        assert int(pairs.x.keys[i]) == key_of(record["x"])
        assert int(pairs.y.keys[i]) == key_of(record["y"])
        for j, negative in enumerate(record["neg"]):
            got = pairs.negatives.sequence(3 * i + j).tolist()
            assert got == tokens.encode([negative], "document")[0]
            assert int(pairs.negatives.keys[3 * i + j]) == key_of(negative)
    assert pairs.x.keys[5] == pairs.x.keys[1]
    assert len(set(pairs.y.keys.tolist())) == 9  # distinct texts, distinct keys here


def test_without_negatives_there_is_no_negatives_column(tokens, tmp_path):
    pairs = _tokenize(_write(tmp_path / "pairs.jsonl", _records(4, negatives=2)), tokens)
    assert pairs.k == 0 and pairs.negatives is None


def test_long_texts_are_truncated_as_the_encoder_truncates(tokens, tmp_path):
    long = "many words " * 200
    pairs = _tokenize(_write(tmp_path / "p.jsonl", [{"x": long, "y": long}]), tokens)
    assert pairs.x.length(0) == tokens.config.max_length
    assert pairs.x.sequence(0).tolist() == tokens.encode([long], "query")[0]
    assert pairs.y.sequence(0).tolist() == tokens.encode([long], "document")[0]


def test_a_second_read_comes_from_the_cache(tokens, tmp_path, monkeypatch):
    path = _write(tmp_path / "pairs.jsonl", _records(7, negatives=2))
    calls = []
    real = DelimitedTokenizer.encode

    def counting(self, texts, side):
        calls.append(len(texts))
        return real(self, texts, side)

    monkeypatch.setattr(DelimitedTokenizer, "encode", counting)
    first = _tokenize(path, tokens, "neg")
    assert calls, "the first read tokenizes"
    calls.clear()
    second = _tokenize(path, tokens, "neg")
    assert calls == []
    for column in ("x", "y", "negatives"):
        a, b = getattr(first, column), getattr(second, column)
        assert a.ids.tolist() == b.ids.tolist() and a.starts.tolist() == b.starts.tolist()
        assert a.keys.tolist() == b.keys.tolist()


def test_cache_env_decides_where_the_folder_goes(tokens, tmp_path, cache):
    path = _write(tmp_path / "pairs.jsonl", _records(3))
    _tokenize(path, tokens)
    folder = cache_folder(path, tokenizer_fingerprint(tokens), None)
    assert folder.is_relative_to(cache / "tokens") and (folder / "meta.json").is_file()
    assert {p.parent for p in _cache_files(cache)} == {folder}


def test_what_decides_the_ids_decides_the_folder(tokens, tmp_path):
    path = _write(tmp_path / "pairs.jsonl", _records(3, negatives=1))
    fingerprint = tokenizer_fingerprint(tokens)
    folder = cache_folder(path, fingerprint, None)
    assert cache_folder(path, tokenizer_fingerprint(_with(tokens)), None) == folder
    shorter = _with(tokens, max_length=16)
    other_delimiters = _with(tokens, delimiters={"query": ("<", ">"), "document": ("{", "}")})
    fingerprints = {tokenizer_fingerprint(t) for t in (tokens, shorter, other_delimiters)}
    assert len(fingerprints) == 3
    folders = {cache_folder(path, f, None) for f in fingerprints}
    folders.add(cache_folder(path, fingerprint, "neg"))
    assert len(folders) == 4

    pairs = _tokenize(path, shorter)
    assert pairs.x.sequence(0).tolist() == shorter.encode([_records(3)[0]["x"]], "query")[0]
    assert (cache_folder(path, tokenizer_fingerprint(shorter), None) / "meta.json").is_file()
    assert not folder.exists()


def test_a_changed_file_gets_another_folder(tokens, tmp_path):
    path = _write(tmp_path / "pairs.jsonl", _records(3))
    fingerprint = tokenizer_fingerprint(tokens)
    before = cache_folder(path, fingerprint, None)
    _tokenize(path, tokens)

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched only
    touched = cache_folder(path, fingerprint, None)
    assert touched != before

    changed = [{"x": "a new question", "y": "a new answer"}, *_records(3)]
    _write(path, changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, another size
    after = cache_folder(path, fingerprint, None)
    assert after not in (before, touched)
    pairs = _tokenize(path, tokens)
    assert len(pairs) == 4
    assert pairs.x.sequence(0).tolist() == tokens.encode(["a new question"], "query")[0]
    assert before.is_dir() and after.is_dir()


@pytest.mark.parametrize("bad", [{"x": 3, "y": "b"}, {"x": "a", "y": None}, {"y": "b"}])
def test_a_bad_record_names_file_and_record_and_leaves_no_folder(
    tokens, tmp_path, monkeypatch, cache, bad
):
    monkeypatch.setattr(tokens_module, "_BLOCK", 2)  # blocks before it get tokenized
    records = _records(5)
    records.insert(4, bad)
    path = _write(tmp_path / "bad.jsonl", records)
    with pytest.raises(InputError, match=r"bad\.jsonl: record 5 ") as caught:
        _tokenize(path, tokens)
    assert str(path) in str(caught.value)
    assert _cache_files(cache) == []
    assert not cache_folder(path, tokenizer_fingerprint(tokens), None).exists()


def test_bad_hard_negatives_leave_no_folder(tokens, tmp_path, monkeypatch, cache):
    monkeypatch.setattr(tokens_module, "_BLOCK", 2)
    records = _records(5, negatives=2)
    records[3]["neg"] = ["only one"]
    path = _write(tmp_path / "neg.jsonl", records)
    with pytest.raises(InputError, match=r"record 4: .*same number of hard negatives"):
        _tokenize(path, tokens, "neg")
    records[3]["neg"] = "not a list"
    _write(path, records)
    with pytest.raises(InputError, match=r"record 4: .*non-empty list field 'neg'"):
        _tokenize(path, tokens, "neg")
    assert _cache_files(cache) == []


def test_an_empty_file_holds_no_pairs(tokens, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    pairs = _tokenize(path, tokens)
    assert len(pairs) == 0 and len(pairs.y) == 0 and pairs.k == 0
    assert len(_tokenize(path, tokens, "neg")) == 0


# ---------------------------------------------------------------- PairStore


def _source(*files: Path) -> Source:
    return Source(list(files), 1.0, str(files[0].parent))


def test_a_source_without_pairs_is_refused(tokens, tmp_path):
    empty = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path in empty:
        path.write_text("\n")
    full = _write(tmp_path / "full.jsonl", _records(2))
    with pytest.raises(InputError, match=r"no pairs in 2 file\(s\)"):
        PairStore([_source(full), _source(*empty)], tokens)
    store = PairStore([_source(empty[0], full)], tokens)  # an empty file among others is fine
    assert next(store.refs(0)) == (0, 1, 0)


def test_files_with_different_numbers_of_negatives_are_refused(tokens, tmp_path):
    two = _write(tmp_path / "two.jsonl", _records(3, negatives=2))
    one = _write(tmp_path / "one.jsonl", _records(3, negatives=1))
    with pytest.raises(InputError, match=r"same number of hard negatives.*1, 2"):
        PairStore([_source(two), _source(one)], tokens, "neg")
    with pytest.raises(InputError, match=r"same number of hard negatives.*1, 2"):
        PairStore([_source(two, one)], tokens, "neg")


def test_store_sequences_follow_the_refs(tokens, tmp_path):
    a_records, b_records = _records(4, negatives=3), _records(6, negatives=3)[2:]
    a = _write(tmp_path / "a.jsonl", a_records)
    b = _write(tmp_path / "b.jsonl", b_records)
    store = PairStore([_source(a), _source(b)], tokens, "neg")
    assert store.k == 3
    by_source = [a_records, b_records]
    refs = [(1, 0, 3), (0, 0, 0), (0, 0, 2), (1, 0, 0)]
    records = [by_source[s][row] for s, _, row in refs]
    negatives = store.sequences(refs, "negatives")
    assert len(negatives) == 3 * len(refs)
    expected = tokens.encode([n for r in records for n in r["neg"]], "document")
    assert [n.tolist() for n in negatives] == expected
    xs = store.sequences(refs, "x")
    assert [x.tolist() for x in xs] == tokens.encode([r["x"] for r in records], "query")
    ys = store.sequences(refs, "y")
    assert [y.tolist() for y in ys] == tokens.encode([r["y"] for r in records], "document")
    assert [store.keys(ref) for ref in refs] == [(key_of(r["x"]), key_of(r["y"])) for r in records]


def test_a_lone_surrogate_is_named_with_its_file_and_record(tokens, tmp_path, cache):
    path = tmp_path / "surrogate.jsonl"
    path.write_text(
        json.dumps({"x": "fine", "y": "fine too"})
        + "\n"
        + '{"x": "half \\ud800 a pair", "y": "b"}\n'
    )
    with pytest.raises(InputError, match="surrogate") as caught:
        _tokenize(path, tokens)
    assert str(path) in str(caught.value) and "record 2" in str(caught.value)
    assert _cache_files(cache) == []


@pytest.mark.parametrize("weight", ["nan", "inf"])
def test_a_weight_must_be_a_finite_number(tmp_path, weight):
    from cpt_embed.train.sources import parse_sources

    path = _write(tmp_path / "pairs.jsonl", _records(2))
    with pytest.raises(InputError, match="weight"):
        parse_sources([f"{path}:{weight}"])
