"""`cpt serve` on a port in use: one line naming the port and the fix, exit 2, before the
model loads, the process restarts itself or "serving" is printed."""

from __future__ import annotations

import os
import socket

import pytest
from typer.testing import CliRunner

from cpt_embed import Encoder
from cpt_embed.cli import app
from cpt_embed.errors import InputError
from cpt_embed.serve.process import OPENMP_WAITING, check_port


@pytest.fixture
def busy_port():
    """A port another server listens on while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_fails_before_anything_loads(busy_port, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("ran past the port check")

    monkeypatch.setattr(Encoder, "load", must_not_run)
    monkeypatch.setattr(os, "execve", must_not_run)  # the OpenMP restart
    for name in OPENMP_WAITING:
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["serve", "--port", str(busy_port)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: port {busy_port} on 127.0.0.1 is in use")
    assert "--port N" in lines[0] and "stop the process" in lines[0]
    assert "serving" not in result.output


def test_check_port_passes_a_free_port_and_names_a_bad_host():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)  # the check's own socket leaves the port free
    with pytest.raises(InputError, match="--host 192.0.2.1: not an address of this machine"):
        check_port("192.0.2.1", port)
