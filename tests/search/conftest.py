"""Fixtures of the search tests: the default model, a tiny random one, and a fresh copy of
the sample repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_repo import write_repo

from cpt_embed import Encoder


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.load("default")


@pytest.fixture(scope="module")
def tiny_encoder(tiny_bert) -> Encoder:
    return Encoder.load(tiny_bert)


@pytest.fixture
def repo(tmp_path) -> Path:
    return write_repo(tmp_path / "repo")
