"""Fixtures of the server tests: the default model, loaded once, and an app around it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cpt_embed import Encoder
from cpt_embed.serve.app import create_app


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder.load("default")


@pytest.fixture
def client(encoder):
    with TestClient(create_app(encoder, "default")) as test_client:
        yield test_client
