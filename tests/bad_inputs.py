"""Bad inputs shared by the bad-input tests of every reader, and the check that the CLI
turns each into one clear line (`error: <file>: <what is wrong>; <the fix>`, exit code 2)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PROSE = (
    "Contrastive pre-training learns embeddings from pairs of neighbouring texts. "
    "Each passage is paired with the next one, and the model learns to tell them apart "
    "from the other passages of the batch.\n"
)
# Bytes that are no UTF-8 text, as readers meet them.
NOT_UTF8 = {
    "latin1": "café olé, déjà vu\n".encode("latin-1"),
    "utf16_bom": "hello\nworld\n".encode("utf-16"),
    "nul_bytes": b"hello\0world\n",
    "binary_blob": random.Random(0).randbytes(4096),
}
DEEP_JSON = b"[" * 100_000 + b"\n"  # RecursionError in json.loads
# one function `cpt pairs code` mines a pair from
PY_FUNCTION = (
    "def add_one(value):\n"
    '    """Return the value plus one, for counting things."""\n'
    "    result = value + 1\n"
    "    print(result)\n"
    "    return result\n"
)
UNICODE_NAME = "dir with space/données ✓"  # + a suffix


def gzip_truncated(lines: int = 2000) -> bytes:
    """A .jsonl.gz cut in half: gzip.BadGzipFile/EOFError part way through."""
    data = gzip.compress(
        "".join(json.dumps({"text": f"{i} {PROSE}"}) + "\n" for i in range(lines)).encode()
    )
    return data[: len(data) // 2]


def parquet_bytes(table) -> bytes:
    """`table` as Parquet file bytes."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def parquet_bad_name(table, name: str) -> bytes:
    """`table` as Parquet file bytes whose column `name` is no UTF-8 in the schema."""
    return parquet_bytes(table).replace(name.encode(), b"\x80" + name.encode()[1:])


def write(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def write_big_line(path: Path, megabytes: float, prefix: str = "", suffix: str = "") -> Path:
    """A file holding one line of `megabytes` MiB of words (no newline inside), written a
    MiB at a time, between `prefix` and `suffix`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = ("word " * (1 << 18)).encode()[: 1 << 20]
    with open(path, "wb") as handle:
        handle.write(prefix.encode())
        whole, part = divmod(int(megabytes * (1 << 20)), 1 << 20)
        for _ in range(whole):
            handle.write(chunk)
        handle.write(chunk[:part] + suffix.encode() + b"\n")
    return path


def gzip_bomb(path: Path, megabytes: int) -> Path:
    """A gzip file of `megabytes` MiB of the letter a, without a newline, in about 1 kB per
    MiB: 1 MiB gzip members one after another, which gzip reads as one stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"a" * (1 << 20), mtime=0) * megabytes)
    return path


def sparse_file(path: Path, gigabytes: int) -> Path:
    """A file of `gigabytes` GiB of NUL bytes (no newline) that takes no room on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(gigabytes << 30)
    return path


def special_files(folder: Path, *names: str) -> list[Path]:
    """FIFOs (named pipes, no writer: opening one blocks for ever) and, for names ending in
    .sock, Unix sockets (their listeners closed) in `folder`, under `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        if name.endswith(".sock"):
            with socket.socket(socket.AF_UNIX) as listener:
                listener.bind(str(path))
        else:
            os.mkfifo(path)
        paths.append(path)
    return paths


@contextlib.contextmanager
def fed_fifo(path: Path, data: bytes) -> Iterator[Path]:
    """`path` made a FIFO that a thread writes `data` into once a reader opens it, as the
    shell's `<(cmd)` does; a writer still waiting at the end is let go."""
    os.mkfifo(path)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(path, "wb") as handle:
            handle.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield path
    finally:
        if writer.is_alive():  # nobody read: open the other end, so that the writer ends
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(5)


_PEAK = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def cpt_measured(
    *args: str | os.PathLike, timeout: float = 300
) -> tuple[subprocess.CompletedProcess, float]:
    """`cpt ARGS` run as a process of its own (killed with its measuring parent after
    `timeout` seconds): the finished process (stderr without the measurement) and its peak
    resident memory in MiB."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CPT_DEBUG", None)
    command = [sys.executable, "-c", _PEAK, sys.executable, "-m", "cpt_embed.cli", *args]
    process = subprocess.Popen(
        list(map(str, command)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    stderr, _, peak = stderr.rstrip("\n").rpartition("\n")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    return result, int(peak) / 1024


def symlink_loops(folder: Path) -> Path:
    """`folder` holding a link to itself (`self`) and a link to its own name (`me.txt`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "self").symlink_to(folder, target_is_directory=True)
    (folder / "me.txt").symlink_to(folder / "me.txt")
    return folder


def unreadable(path: Path) -> Path:
    """`path` made unreadable (chmod 000); skips the test as root, whom modes do not stop."""
    if os.geteuid() == 0:
        pytest.skip("running as root, which reads files whatever their mode")
    path.chmod(0)
    return path


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def no_model_load(monkeypatch) -> Iterator[None]:
    """Within the block, loading a model or a tokenizer fails the test: a command must check
    its inputs before it loads one."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer loaded before the inputs were checked")

    with monkeypatch.context() as patch:
        patch.setattr("cpt_embed.model.Encoder.load", refuse)
        patch.setattr("transformers.AutoTokenizer.from_pretrained", refuse)
        yield


def one_line_error(result, *names: str) -> str:
    """The error line of a command that must have failed cleanly (a CliRunner result or a
    finished subprocess): exit code 2, no traceback, one `error:` line (the last; progress
    bars may come before), naming each of `names`."""
    if isinstance(result, subprocess.CompletedProcess):
        code, output = result.returncode, result.stderr
    else:
        code, output = result.exit_code, result.output
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert code == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in re.split(r"[\r\n]+", output) if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], output[-3000:]
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]
