"""A file's sha256 is read once per state of the file, also across processes (under
$CPT_CACHE), and read again whenever the file changes."""

from __future__ import annotations

import hashlib
import os

import pytest

from cpt_embed import checksums


@pytest.fixture
def counted(tmp_path, monkeypatch):
    """The files sha256_of reads, in order; a fresh cache and process memory."""
    monkeypatch.setenv("CPT_CACHE", str(tmp_path / "cache"))
    checksums._remembered.cache_clear()
    reads = []
    real = checksums.sha256_of
    monkeypatch.setattr(checksums, "sha256_of", lambda path: reads.append(path) or real(path))
    yield reads
    checksums._remembered.cache_clear()


def test_a_file_is_read_once_per_state_across_processes(tmp_path, counted):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    expected = hashlib.sha256(b"weights").hexdigest()
    assert checksums.file_sha256(weights) == expected
    checksums._remembered.cache_clear()  # as a new process starts
    assert checksums.file_sha256(weights) == expected
    assert len(counted) == 1
    weights.write_bytes(b"other!!")  # same size
    os.utime(weights, ns=(0, 0))
    assert checksums.file_sha256(weights) == hashlib.sha256(b"other!!").hexdigest()
    assert len(counted) == 2


def test_a_damaged_record_is_read_past(tmp_path, counted):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    checksums.file_sha256(weights)
    (record,) = (tmp_path / "cache" / "checksums").iterdir()
    record.write_text("not a digest", encoding="ascii")
    checksums._remembered.cache_clear()
    assert checksums.file_sha256(weights) == hashlib.sha256(b"abc").hexdigest()
    assert len(counted) == 2


def test_an_unwritable_cache_costs_a_read_only(tmp_path, counted):
    (tmp_path / "cache").write_text("a file where the folder would go", encoding="utf-8")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc")
    assert checksums.file_sha256(weights) == hashlib.sha256(b"abc").hexdigest()
