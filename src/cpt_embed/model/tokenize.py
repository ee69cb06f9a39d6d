"""Tokenization with per-side delimiters and a closing delimiter that truncation never cuts."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch

from cpt_embed.errors import InputError
from cpt_embed.model.config import SIDES, EncoderConfig, Side
from cpt_embed.model.runtime.attention import Ragged

# Characters looked at per token before a long text is tokenized in full; generous, since
# the cut is only a speed-up and is checked (see _head_ids).
_CHARS_PER_TOKEN = 8
# ... and at most: a text whose first tokens span more (runs of letters read as one [UNK],
# megabytes without a space) is cut there, so that no input is tokenized in full.
_MAX_CHARS_PER_TOKEN = 256


def special_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text (e.g. CLS/SEP, BOS)."""
    probe = "a"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    raise InputError(
        f"cannot tell the special tokens of tokenizer {type(tokenizer).__name__}: "
        f"{probe!r} gives {bare} alone and {full} with special tokens"
    )


def _bucket(tokens: int) -> int:
    """`tokens` rounded up to one of 32 sizes per power of two (at most 1/32 more): rows of
    a bounded set of lengths let oneDNN reuse its kernels and the allocator its blocks (a
    server's memory grew by a third over a minute with rows of every length), and the
    linear layers compute little padding (8 sizes per power of two cost short texts 4% of
    their tokens)."""
    step = 1 << max(0, tokens.bit_length() - 6)
    return -(-tokens // step) * step


def _flat(sequences: Sequence[Sequence[int]], total: int) -> np.ndarray:
    """The token ids of `sequences` end to end, as int64."""
    return np.fromiter(chain.from_iterable(sequences), dtype=np.int64, count=total)


class DelimitedTokenizer:
    """Turns texts into `special + prefix + text + suffix + special` token ids, and pads them.

    The prefix is tokenized together with the text (as sentence-transformers does with
    prompts); the closing delimiter is tokenized on its own and appended after truncation,
    so it is always present and always whole, and `eos` pooling reads it.
    """

    def __init__(self, tokenizer, config: EncoderConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.lead, self.trail = special_template(tokenizer)
        self.suffix_ids = {
            side: list(tokenizer(config.delimiters[side][1], add_special_tokens=False)["input_ids"])
            for side in SIDES
        }
        for side in SIDES:
            if self.budget(side) < 0:
                raise InputError(
                    f"max_length {config.max_length} leaves no room for the text on the "
                    f"{side} side (special tokens and delimiters take "
                    f"{config.max_length - self.budget(side)}); raise max_length"
                )
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.with_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])

    def budget(self, side: Side) -> int:
        """Tokens left for prefix + text once special tokens and the suffix are counted."""
        fixed = len(self.lead) + len(self.trail) + len(self.suffix_ids[side])
        return self.config.max_length - fixed

    def _head_ids(self, texts: list[str], budget: int) -> list[list[int]]:
        """Token ids of each text cut to `budget`, without tokenizing megabytes of tail.

        A long text is first cut at a space (U+0020) before `budget * 8` characters;
        pre-tokenizers always end a word at a space (other whitespace can be deleted by
        normalisers), so the cut text's first tokens equal the full text's. A text without
        such a space is cut mid-word (only that word's tokens may differ, past the others).
        Unless the cut text yields more than `budget` tokens, a longer piece is tried, up to
        `budget * 256` characters.
        """
        window = max(256, budget * _CHARS_PER_TOKEN)
        limit = max(window, budget * _MAX_CHARS_PER_TOKEN)
        pending = list(range(len(texts)))
        ids: list[list[int]] = [[] for _ in texts]
        while pending:
            pieces, retry = [], []
            for i in pending:
                text = texts[i]
                cut = text.rfind(" ", 0, window) if len(text) > window else len(text)
                pieces.append(text[:cut] if cut > 0 else text[:window])
            encoded = self.tokenizer(pieces, add_special_tokens=False, verbose=False)["input_ids"]
            for i, piece, tokens in zip(pending, pieces, encoded, strict=True):
                if len(piece) < len(texts[i]) and len(tokens) <= budget and window < limit:
                    retry.append(i)
                else:
                    ids[i] = list(tokens[:budget])
            pending, window = retry, window * 4
        return ids

    def encode(self, texts: Sequence[str], side: Side) -> list[list[int]]:
        """Full token id sequences (unpadded) for `texts` on `side`."""
        if side not in SIDES:
            raise InputError(f"side must be one of {SIDES}, got {side!r}")
        prefix = self.config.delimiters[side][0]
        heads = self._head_ids([prefix + t for t in texts], self.budget(side))
        suffix = self.suffix_ids[side]
        sequences = [self.lead + head + suffix + self.trail for head in heads]
        for i, seq in enumerate(sequences):
            if not seq:
                raise InputError(
                    f"text {i} is empty and this model adds no special tokens or delimiters, "
                    "so it has nothing to embed; drop empty texts or set delimiters"
                )
        return sequences

    def pool_offset(self, side: Side) -> int:
        """Position of the `eos` token counted back from the sequence end (1 = last token)."""
        return len(self.trail) + 1 if self.suffix_ids[side] else 1

    def pad(self, sequences: Sequence[Sequence[int]], side: Side) -> dict[str, torch.Tensor]:
        """Pad to a batch; `pool_index` marks each row's `eos` token, `first_index` its first."""
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        width = int(lengths.max())
        starts = width - lengths if self.config.padding_side == "left" else np.zeros_like(lengths)
        columns = np.arange(width)
        real = (columns >= starts[:, None]) & (columns < (starts + lengths)[:, None])
        input_ids = np.full(real.shape, self.pad_id, dtype=np.int64)
        input_ids[real] = _flat(sequences, int(lengths.sum()))  # row by row, in order
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(real.astype(np.int64)),
            "pool_index": torch.from_numpy(starts + lengths - self.pool_offset(side)),
            "first_index": torch.from_numpy(starts),
        }
        if self.with_token_types:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    def ragged(self, sequences: Sequence[Sequence[int]], side: Side) -> dict[str, object]:
        """`sequences` end to end in one row, for a model copy that takes a `Ragged`
        (no padding in its linear layers); `attention_mask`, `pool_index` and
        `first_index` describe the re-padded (batch, width) layout the hidden states are
        pooled from, as `pad` does with right padding."""
        lengths = [len(s) for s in sequences]
        total = sum(lengths)
        ragged = Ragged.of(lengths, _bucket(total))
        input_ids = torch.full(ragged.positions.shape, self.pad_id, dtype=torch.long)
        input_ids[:total] = torch.from_numpy(_flat(sequences, total))
        batch: dict[str, object] = {
            "input_ids": input_ids[None],
            "position_ids": ragged.positions[None],
            "attention_mask": ragged.valid.long(),
            "pool_index": ragged.lengths - self.pool_offset(side),
            "first_index": torch.zeros(len(sequences), dtype=torch.long),
            "ragged": ragged,
        }
        if self.with_token_types:
            batch["token_type_ids"] = torch.zeros_like(input_ids)[None]
        return batch
