"""What the HTTP API reads and answers: request bodies with their limits, and the shapes of
its answers, as in OpenAI's embeddings API (and huggingface/text-embeddings-inference's
OpenAI-compatible router) plus the cpt-embed extensions.

Requests are validated strictly: a number is no string, a float or a boolean no integer.
The response models document the answers in `/openapi.json`; the routes write the bodies
themselves (vectors go out through orjson, not through pydantic)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# OpenAI's limits for its embedding models.
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
# Characters are capped before anything is tokenized, at 8 a token (English takes about 4,
# code 3-5): longer inputs are over the token limit in practice, and a request's
# tokenizing stays bounded (about 2 s on one core at most).
CHARS_PER_TOKEN = 8
MAX_INPUT_CHARS = CHARS_PER_TOKEN * MAX_INPUT_TOKENS
MAX_REQUEST_CHARS = CHARS_PER_TOKEN * MAX_REQUEST_TOKENS
# A search query is one input; its text is capped before tokenizing (4 bytes per token).
MAX_QUERY_CHARS = 4 * MAX_INPUT_TOKENS


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings: OpenAI's request, plus the side to embed on."""

    model_config = ConfigDict(strict=True)

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    input_type: Literal["query", "document"] = Field(
        "query", description="cpt-embed extension: the side to embed on."
    )


def embedding_request_schema(dim: int, vocabulary: int) -> dict[str, Any]:
    """EmbeddingRequest's JSON schema with the limits the route checks itself (inputs,
    characters, token ids of a `vocabulary`, `dimensions` up to `dim`), so that a body the
    schema admits is refused only for its token counts."""
    schema = EmbeddingRequest.model_json_schema()
    text = {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS}
    ids = {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": vocabulary - 1},
        "minItems": 1,
        "maxItems": MAX_INPUT_TOKENS,
    }
    several = {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS}
    schema["properties"]["input"] = {
        "anyOf": [text, several | {"items": text}, ids, several | {"items": ids}],
        "title": "Input",
        "description": f"Texts (at most {MAX_INPUT_CHARS} characters and {MAX_INPUT_TOKENS} "
        f"tokens each, {MAX_REQUEST_TOKENS} tokens in all) or token ids of this model's "
        "tokenizer, embedded as given.",
    }
    schema["properties"]["dimensions"]["anyOf"][0] |= {"minimum": 1, "maximum": dim}
    return schema


class SearchRequest(BaseModel):
    """POST /v1/search: a query over the served index, bounded so that it stays cheap."""

    model_config = ConfigDict(strict=True)

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(10, ge=1, le=1000)
    lang: str | None = Field(None, max_length=64)
    path_glob: str | None = Field(None, max_length=1024)
    mode: Literal["hybrid", "dense", "lexical"] | None = Field(
        None,
        description="hybrid: dense and BM25 fused (the default where the index has both); "
        "dense: the vectors alone; lexical: BM25 alone.",
    )
    explain: bool = Field(
        False,
        description="The best 20 hits get `explanation`: each token's and line's share of "
        "the model's similarity of query and hit (as `cpt search --explain --json`).",
    )


class Embedding(BaseModel):
    """One input's vector: floats, or base64 of little-endian float32."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    """Tokens embedded for a request (each input counted up to the model's max_length)."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """The answer to POST /v1/embeddings, one Embedding per input in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class SearchResponse(BaseModel):
    """The answer to POST /v1/search: hits as `cpt search --json` prints them."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    model: str


class Health(BaseModel):
    """The answer to GET /health."""

    status: Literal["ok"] = "ok"
    model: str
    dim: int
    index: str | None
    queued_texts: int


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error answer: {"error": {message, type, param, code}}."""

    error: ErrorDetail
