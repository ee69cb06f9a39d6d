"""What /v1/embeddings reads: bodies validated strictly, inputs bounded by characters
before any tokenizing, tokens counted in pieces that stop with their caller, and token ids
embedded as given."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from servers import Wrapped

from cpt_embed.serve.app import create_app
from cpt_embed.serve.schemas import MAX_INPUT_CHARS, MAX_REQUEST_CHARS


class CountingTokenizer:
    """The encoder's tokenizer, counting the characters it is given (and slowed down)."""

    def __init__(self, tokenizer, delay: float = 0.0) -> None:
        self.tokenizer, self.delay, self.chars, self.calls = tokenizer, delay, 0, 0

    def __call__(self, texts, **options):
        self.calls += 1
        self.chars += len(texts) if isinstance(texts, str) else sum(map(len, texts))
        time.sleep(self.delay)
        return self.tokenizer(texts, **options)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def _counting(encoder, delay: float = 0.0) -> tuple[Wrapped, CountingTokenizer]:
    wrapped = Wrapped(encoder, encoder.encode)
    wrapped.tokenizer = CountingTokenizer(encoder.tokenizer, delay)
    return wrapped, wrapped.tokenizer


def _error(response) -> str:
    assert response.status_code == 400, response.text
    return response.json()["error"]["message"]


@pytest.mark.parametrize(
    "inputs, message",
    [
        # the body: one 7.9 MB input took 6.3 s and 320 MiB to refuse
        (["word " * 1_580_000], "input[0] has 7900000 characters; at most 65536 per input"),
        (["x" * (MAX_INPUT_CHARS + 1)], "input[0] has 65537 characters; at most 65536"),
        (["y" * 60_000] * 41, "2460000 characters in this request; at most 2400000"),
    ],
)
def test_inputs_over_the_character_caps_are_refused_before_tokenizing(encoder, inputs, message):
    wrapped, tokenizer = _counting(encoder)
    with TestClient(create_app(wrapped, "default")) as client:
        started = time.perf_counter()
        response = client.post("/v1/embeddings", json={"model": "default", "input": inputs})
        seconds = time.perf_counter() - started
    assert _error(response).startswith(message)
    assert tokenizer.chars == 0 and seconds < 3
    assert MAX_REQUEST_CHARS == 2_400_000


def test_tokens_are_counted_in_pieces_until_the_request_is_over_its_limit(encoder):
    wrapped, tokenizer = _counting(encoder)
    texts = ["word " * 234] * 2048  # 2,396,160 characters, 479,232 tokens
    with TestClient(create_app(wrapped, "default")) as client:
        response = client.post("/v1/embeddings", json={"model": "default", "input": texts})
    assert _error(response) == "over 300000 tokens in this request; at most 300000"
    assert tokenizer.chars < 0.7 * sum(map(len, texts))  # stopped at 300,000 tokens


def test_a_caller_past_its_deadline_stops_the_counting(encoder):
    wrapped, tokenizer = _counting(encoder, delay=0.2)
    texts = ["word " * 3300] * 20  # 20 pieces of 16,500 characters
    with TestClient(create_app(wrapped, "default", timeout=0.5)) as client:
        late = client.post("/v1/embeddings", json={"model": "default", "input": texts})
        time.sleep(1.5)
    assert late.status_code == 503
    assert tokenizer.calls <= 5 and tokenizer.chars <= 5 * 16_500  # not all 20 pieces


def test_a_large_request_whose_caller_has_gone_stops_at_the_piece_in_progress(encoder):
    embedded: list[int] = []

    def slow(texts, side="query"):
        time.sleep(0.3)
        embedded.append(len(texts))
        return encoder.encode(texts, side=side)

    app = create_app(Wrapped(encoder, slow), "default", max_batch_tokens=40, timeout=0.2)
    texts = [f"text number {i}" for i in range(40)]  # 5 tokens each: 8 per piece

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            late = await client.post("/v1/embeddings", json={"model": "default", "input": texts})
            await asyncio.sleep(1.0)
        return late

    late = asyncio.run(scenario())
    assert late.status_code == 503
    assert sum(embedded) <= 8  # the first piece alone, not all 40 texts


@pytest.mark.parametrize(
    "body, param",
    [
        ('{"model": "default", "input": [1.0, 2.0]}', "input.str"),
        ('{"model": "default", "input": [true, 5]}', "input.str"),
        ('{"model": "default", "input": [[7592, 2.5]]}', "input.str"),
        ('{"model": "default", "input": "x", "dimensions": "8"}', "dimensions"),
        ('{"model": "default", "input": "x", "dimensions": true}', "dimensions"),
        ('{"model": "default", "input": "x", "dimensions": 8.0}', "dimensions"),
        ('{"model": "default", "input": "x", "user": 5}', "user"),
        ('{"model": "default", "model": "default", "input": "x"}', "model"),
        ('{"model": "default", "input": "x", "input": "y"}', "input"),
        ('{"model": "default", "input": "x", "extra": {"a": 1, "a": 2}}', "a"),
        ('{"model": "default", "input": "x", "extra": NaN}', None),
        ('{"model": "default", "input": "x", "extra": -Infinity}', None),
    ],
)
def test_bodies_are_validated_strictly(client, body, param):
    response = client.post("/v1/embeddings", content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    "body",
    [
        '{"query": "x", "k": true}',
        '{"query": "x", "k": 2.0}',
        '{"query": "x", "k": "2"}',
        '{"query": "x", "query": "y"}',
    ],
)
def test_search_bodies_are_validated_strictly(client, body):
    headers = {"Content-Type": "application/json"}
    response = client.post("/v1/search", content=body, headers=headers)  # valid: 404, no index
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("invalid request body")


def _float32(encoder, sequence: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return encoder(encoder.tokens.pad([sequence], "query"))[0].numpy()


def test_token_ids_are_embedded_as_given(client, encoder):
    ids = encoder.tokenizer("read a json file", add_special_tokens=False)["input_ids"]
    both = client.post("/v1/embeddings", json={"model": "default", "input": [ids, [101, 102]]})
    assert both.status_code == 200, both.text
    from_ids, cls_sep = np.array([row["embedding"] for row in both.json()["data"]])
    np.testing.assert_allclose(from_ids, encoder.encode(["read a json file"])[0], atol=1e-6)
    # [CLS] [SEP] given as ids are two tokens, inside the model's own [CLS] ... [SEP]: not
    # the empty string, which is refused as an input
    expected = _float32(encoder, [101, 101, 102, 102])
    assert float(cls_sep @ expected) > 0.999
    assert float(cls_sep @ encoder.encode([""])[0]) < 0.9
    assert both.json()["usage"]["prompt_tokens"] == len(ids) + 2 + 4
    empty = client.post("/v1/embeddings", json={"model": "default", "input": ""})
    assert empty.status_code == 400


def test_8192_token_ids_are_one_input_at_the_limit(client):
    at_limit = client.post("/v1/embeddings", json={"model": "default", "input": [1000] * 8192})
    assert at_limit.status_code == 200, at_limit.text
    assert at_limit.json()["usage"]["prompt_tokens"] == 256  # what the model reads
    over = client.post("/v1/embeddings", json={"model": "default", "input": [1000] * 8193})
    assert _error(over) == "input[0] has 8193 token ids; at most 8192 per input"
