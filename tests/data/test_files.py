"""Opening and reading corpus files with bounds: reads capped in decompressed bytes, lines
never held longer than their cap, and pipes told from regular files."""

from __future__ import annotations

import gzip
import io
import os

from bad_inputs import gzip_bomb, special_files, write

from cpt_embed.data.files import (
    PIECE,
    bounded_lines,
    is_regular,
    is_stream,
    open_binary,
    read_at_most,
)


class _Counted(io.BytesIO):
    """A handle that remembers the most bytes one read or readline returned."""

    most = 0

    def read(self, size=-1):
        data = super().read(size)
        self.most = max(self.most, len(data))
        return data

    def readline(self, size=-1):
        line = super().readline(size)
        self.most = max(self.most, len(line))
        return line


def test_lines_over_the_cap_are_none_and_never_held_whole():
    handle = _Counted(b"ab\n" + b"x" * (3 * PIECE) + b"\nabcd\nefghi\ncd")
    assert list(bounded_lines(handle, 4)) == [b"ab\n", None, b"abcd\n", None, b"cd"]
    assert handle.most == PIECE  # the 3 MiB line was dropped a piece at a time
    assert list(bounded_lines(io.BytesIO(b""), 4)) == []


def test_reads_stop_one_byte_past_the_cap_of_decompressed_bytes(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.txt.GZ", 8)  # 8 MiB in 8 kB; any case of .gz
    assert bomb.stat().st_size < 20_000
    with open_binary(bomb) as handle:
        assert read_at_most(handle, 1 << 20) is None
        assert handle.tell() == (1 << 20) + 1
    with open_binary(bomb) as handle:
        assert read_at_most(handle, 8 << 20) == b"a" * (8 << 20)
    assert read_at_most(io.BytesIO(b"abc"), 3) == b"abc"
    assert read_at_most(io.BytesIO(b"abcd"), 3) is None
    plain = write(tmp_path / "t.txt", gzip.compress(b"x"))
    with open_binary(plain) as handle:  # no .gz: the bytes as they are
        assert handle.read() == plain.read_bytes()


def test_pipes_are_streams_and_no_regular_files(tmp_path):
    regular = write(tmp_path / "a.txt", "x")
    fifo, sock = special_files(tmp_path, "p.txt", "s.sock")
    link = tmp_path / "link"
    link.symlink_to(fifo)  # as /dev/fd/63 of `<(cmd)` links to its pipe
    assert [is_stream(p) for p in (fifo, link, regular, sock, tmp_path / "gone")] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert is_stream(os.devnull)  # a character device
    assert [is_regular(p) for p in (regular, fifo, sock, link, tmp_path)] == [
        True,
        False,
        False,
        False,
        False,
    ]
