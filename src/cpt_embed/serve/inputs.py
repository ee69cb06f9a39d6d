"""Request bodies read strictly, and the inputs of /v1/embeddings bounded before any work:
their number, their characters (per input and per request) and token ids checked first,
then their tokens counted in bounded pieces, so that no request tokenizes megabytes and a
caller that has gone stops the counting at the next piece."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from cpt_embed.model import Encoder
from cpt_embed.serve.errors import ApiError, invalid_body
from cpt_embed.serve.schemas import (
    MAX_INPUT_CHARS,
    MAX_INPUT_TOKENS,
    MAX_INPUTS,
    MAX_REQUEST_CHARS,
    MAX_REQUEST_TOKENS,
    EmbeddingRequest,
)

# Requests with at most this many characters are tokenized on the event loop (tens of
# microseconds); handing them to a thread and back costs ten times that. Longer ones are
# tokenized in a thread, in pieces of about this size (a few milliseconds each).
INLINE_TOKENIZE_CHARS = 16_384

Body = TypeVar("Body", bound=BaseModel)


def _json_or_untyped(content_type: str) -> bool:
    """True for a body read as JSON: no Content-Type, or application/json or
    application/*+json."""
    kind = content_type.split(";")[0].strip().lower()
    return kind in ("", "application/json") or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise ApiError(400, f"invalid request body: duplicate key {key!r}", param=key)
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ApiError(400, f"invalid request body: {name} is not a JSON value")


# Reads a body again for its keys alone: numbers are not converted (bool of their text is a
# shared constant), so a body of token ids costs no integer objects here.
_KEYS = json.JSONDecoder(
    object_pairs_hook=_keys_once, parse_int=bool, parse_float=bool, parse_constant=_no_constant
)


def _check_keys(raw: bytes) -> None:
    """400 for an object with a key twice, or NaN / Infinity anywhere."""
    try:
        _KEYS.decode(raw.decode())
    except (ValueError, RecursionError) as err:  # what pydantic read and Python's json not
        raise ApiError(400, f"invalid request body: Invalid JSON: {err}") from None


def parse_body(raw: bytes, content_type: str, model: type[Body]) -> Body:
    """The request in `raw` as `model`, validated strictly by pydantic from the bytes at
    once (FastAPI's body validation costs ~0.2 ms a request, as much as the forward pass of
    a short text), with duplicate keys and NaN refused.

    Bodies of other types are refused as FastAPI refuses them (a browser can send
    text/plain across sites without asking first): no body is a missing one, any other
    bytes are no object."""
    if not _json_or_untyped(content_type):
        if not raw:
            raise ApiError(400, "invalid request body: Field required")
        raise ApiError(
            400,
            "invalid request body: Input should be a valid dictionary or object to extract "
            "fields from",
        )
    try:
        body = model.model_validate_json(raw, strict=True)
    except ValidationError as err:
        raise invalid_body(err.errors()) from None
    _check_keys(raw)
    return body


@dataclass(frozen=True)
class Inputs:
    """A request's inputs: texts, or token id lists (`ids` True)."""

    items: list[str] | list[list[int]]
    ids: bool


def read_inputs(body: EmbeddingRequest, vocabulary: int) -> Inputs:
    """The request's inputs, within OpenAI's limits on their number and ours on their
    characters; token ids checked against a tokenizer of `vocabulary` ids."""
    items: Any = body.input
    if isinstance(items, str):
        items = [items]
    if not items:
        raise ApiError(400, "input must not be empty", param="input")
    if isinstance(items[0], int):
        items = [items]
    if len(items) > MAX_INPUTS:
        raise ApiError(400, f"{len(items)} inputs; at most {MAX_INPUTS} per request", param="input")
    if isinstance(items[0], str):
        _check_texts(items)
        return Inputs(items, ids=False)
    for i, ids in enumerate(items):
        _check_tokens(i, len(ids), "token ids")
    if sum(map(len, items)) > MAX_REQUEST_TOKENS:
        raise ApiError(
            400,
            f"{sum(map(len, items))} token ids in this request; at most {MAX_REQUEST_TOKENS}",
            param="input",
        )
    for i, ids in enumerate(items):
        if not ids or min(ids) < 0 or max(ids) >= vocabulary:
            raise ApiError(
                400,
                f"input[{i}]: token ids must be a non-empty list in [0, {vocabulary}) of this "
                "model's tokenizer",
                param="input",
            )
    return Inputs(items, ids=True)


def _check_texts(texts: list[str]) -> None:
    total = 0
    for i, text in enumerate(texts):
        if not text:
            raise ApiError(400, f"input[{i}] is an empty string", param="input")
        if len(text) > MAX_INPUT_CHARS:
            raise ApiError(
                400,
                f"input[{i}] has {len(text)} characters; at most {MAX_INPUT_CHARS} per input "
                f"(and {MAX_INPUT_TOKENS} tokens)",
                param="input",
            )
        total += len(text)
    if total > MAX_REQUEST_CHARS:
        raise ApiError(
            400,
            f"{total} characters in this request; at most {MAX_REQUEST_CHARS} (and "
            f"{MAX_REQUEST_TOKENS} tokens)",
            param="input",
        )


def _check_tokens(i: int, n: int, what: str = "tokens") -> None:
    if n > MAX_INPUT_TOKENS:
        raise ApiError(
            400, f"input[{i}] has {n} {what}; at most {MAX_INPUT_TOKENS} per input", param="input"
        )


def _pieces(texts: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) ranges of `texts` of about INLINE_TOKENIZE_CHARS each (one text may
    be longer, up to MAX_INPUT_CHARS)."""
    pieces, start, size = [], 0, 0
    for end, text in enumerate(texts, 1):
        size += len(text)
        if size >= INLINE_TOKENIZE_CHARS:
            pieces.append((start, end))
            start, size = end, 0
    if start < len(texts):
        pieces.append((start, len(texts)))
    return pieces


async def text_tokens(texts: list[str], encoder: Encoder) -> list[int]:
    """Each text's own tokens (no special tokens), checked against OpenAI's per-input and
    per-request limits. A request longer than INLINE_TOKENIZE_CHARS is counted piece by
    piece in a thread; a cancelled caller stops at the end of the piece being counted."""
    tokenizer = encoder.tokenizer

    def count(start: int, end: int) -> list[int]:
        ids = tokenizer(
            texts[start:end],
            add_special_tokens=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
        return [len(row) for row in ids]

    inline = sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS
    lengths: list[int] = []
    for start, end in _pieces(texts):
        counted = count(start, end) if inline else await asyncio.to_thread(count, start, end)
        for i, n in enumerate(counted, start):
            _check_tokens(i, n)
        lengths.extend(counted)
        if sum(lengths) > MAX_REQUEST_TOKENS:
            done = f"{sum(lengths)}" if end == len(texts) else f"over {MAX_REQUEST_TOKENS}"
            raise ApiError(
                400,
                f"{done} tokens in this request; at most {MAX_REQUEST_TOKENS}",
                param="input",
            )
    return lengths
