"""Training batches from pair files: several sources mixed by weight, shuffled through a
buffer, endless (each source restarts when spent), and batches in which no x and no y
text appears twice. The stream moves references to pairs (source, file, row) whose token
ids wait in the token cache (tokens.py), so drawing a batch tokenizes and hashes nothing.
Everything follows from the seed, so a resumed run replays the stream up to its saved
position and goes on with exactly the batches it would have had."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from cpt_embed.errors import InputError
from cpt_embed.model.tokenize import DelimitedTokenizer
from cpt_embed.train.sources import Source
from cpt_embed.train.tokens import TokenizedPairs, tokenized, tokenizer_fingerprint

# A pair: (source, file of that source, row of that file).
Ref = tuple[int, int, int]


class PairStore:
    """The token ids of every file of every source (tokenized on first use, then from the
    cache), and what a batch needs of a pair: its keys and its sequences."""

    def __init__(
        self,
        sources: list[Source],
        tokens: DelimitedTokenizer,
        negatives: str | None = None,
        *,
        show_progress: bool = False,
    ) -> None:
        fingerprint = tokenizer_fingerprint(tokens)
        self.sources = sources
        self.files: list[list[TokenizedPairs]] = [
            [
                tokenized(f, tokens, fingerprint, negatives, show_progress=show_progress)
                for f in s.files
            ]
            for s in sources
        ]
        for source, files in zip(sources, self.files, strict=True):
            if not sum(len(f) for f in files):
                raise InputError(f"{source.name}: no pairs in {len(files)} file(s)")
        ks = {f.k for files in self.files for f in files if len(f)}
        if len(ks) > 1:
            raise InputError(
                f"pairs must all have the same number of hard negatives in {negatives!r} "
                f"(the files hold {', '.join(map(str, sorted(ks)))})"
            )
        self.k = ks.pop() if ks else 0

    def keys(self, ref: Ref) -> tuple[int, int]:
        """The x and y keys of a pair (equal texts, equal keys)."""
        pairs = self.files[ref[0]][ref[1]]
        return int(pairs.x.keys[ref[2]]), int(pairs.y.keys[ref[2]])

    def sequences(self, refs: list[Ref], column: str) -> list[np.ndarray]:
        """Token ids of `column` (x, y or negatives: k per pair, pair by pair) of the pairs."""
        out = []
        for source, file, row in refs:
            pairs = self.files[source][file]
            if column == "negatives":
                out += [pairs.negatives.sequence(row * self.k + j) for j in range(self.k)]
            else:
                out.append(getattr(pairs, column).sequence(row))
        return out

    def refs(self, source: int) -> Iterator[Ref]:
        """The pairs of one source, file after file, endlessly."""
        files = self.files[source]
        while True:
            for index, pairs in enumerate(files):
                for row in range(len(pairs)):
                    yield source, index, row


def pair_stream(store: PairStore, seed: int, buffer: int) -> Iterator[Ref]:
    """Pairs drawn from the sources by weight, shuffled through a `buffer`."""
    rng = np.random.default_rng(seed)
    streams = [store.refs(i) for i in range(len(store.sources))]
    weights = np.array([s.weight for s in store.sources], dtype=float)
    weights /= weights.sum()
    pool: list[Ref] = []
    while True:
        while len(pool) < buffer:
            pool.append(next(streams[rng.choice(len(streams), p=weights)]))
        index = int(rng.integers(len(pool)))
        pool[index], pool[-1] = pool[-1], pool[index]
        yield pool.pop()


def batches(refs: Iterator[Ref], store: PairStore, batch_size: int) -> Iterator[list[Ref]]:
    """Batches of `batch_size` pairs with no repeated x or y text; a pair that would
    repeat one waits for the next batch."""
    waiting: deque[Ref] = deque()
    while True:
        batch, xs, ys, later = [], set(), set(), []
        while len(batch) < batch_size:
            ref = waiting.popleft() if waiting else next(refs)
            kx, ky = store.keys(ref)
            if kx in xs or ky in ys:
                later.append(ref)
                if len(later) > 10 * batch_size:
                    raise InputError(
                        "the pairs repeat too much to fill a batch without "
                        "duplicates; use more data or a smaller batch size"
                    )
                continue
            batch.append(ref)
            xs.add(kx)
            ys.add(ky)
        waiting.extend(later)
        yield batch
