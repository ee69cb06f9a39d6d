"""encode.py's measurement at 2 threads while a second process keeps one core busy, as on a
shared machine, a laptop at work or a container beside others (make bench's
"encode_contended"; docs/benchmarks.md compares it with the quiet "encode" section).

    python benchmarks/encode_contended.py   # = encode.py --threads 2 --contended
"""

from __future__ import annotations

from encode import KINDS, measure, plot
from peers import BACKENDS

__all__ = ["plot", "run"]


def run(quick: bool = False) -> dict:
    """The contended benchmark (400 texts per kind, 2 threads, median of 3, every venv peer);
    quick=True: 50 texts, one repeat, no venv peers."""
    peers = () if quick else BACKENDS
    result = measure(
        list(KINDS),
        [2],
        repeats=1 if quick else 3,
        limit=50 if quick else 400,
        peers=peers,
        contended=True,
    )
    return result | {"name": "encode_contended"}


if __name__ == "__main__":
    print(run()["markdown"])
