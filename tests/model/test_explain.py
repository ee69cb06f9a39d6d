"""`Encoder.explain`: the tokens are the ones the model embeds, the scores add up to what
they claim, lines add up their tokens, and on the real default model the explanation is
faithful: a shared word ranks high, and deleting the top tokens costs more than deleting
random ones."""

from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest
import torch

from cpt_embed import Encoder
from cpt_embed.errors import InputError
from cpt_embed.model.explain import default_layer

QUERY = "how to add two numbers"
CODE = 'def add(a, b):\n    """Sum of a and b."""\n\n    return a + b\n'


def _cosine(encoder: Encoder, query: str, document: str, side: str = "document") -> float:
    q = encoder.encode([query], "query", dtype="float32")[0]
    d = encoder.encode([document], side, dtype="float32")[0]
    return float(q @ d / np.linalg.norm(q) / np.linalg.norm(d))


def test_tokens_are_the_ones_the_model_embeds(tiny_model):
    encoder = Encoder.load(tiny_model)
    explained = encoder.explain(QUERY, CODE, dtype="float32")
    for text, side, part in [
        (QUERY, "query", explained.query),
        (CODE, "document", explained.document),
    ]:
        ids = encoder.tokens.encode([text], side)[0]
        assert len(part.tokens) == len(part.scores) == len(part.special) == len(ids)
        for token, span, special, score in zip(
            part.tokens, part.spans, part.special, part.scores, strict=True
        ):
            if special:
                assert span is None and score == 0.0
            else:
                assert text[span[0] : span[1]] == token
        assert not part.truncated
    # delimiters (the causal models' [ ] and { }) and the tokenizer's own are special
    n_special = len(encoder.tokens.lead) + len(encoder.tokens.trail)
    opening, closing = encoder.config.delimiters["document"]
    assert sum(explained.document.special) >= n_special + bool(opening) + bool(closing)
    assert explained.similarity == pytest.approx(_cosine(encoder, QUERY, CODE), abs=1e-5)


@pytest.mark.parametrize("layer", [0, 1])
def test_scores_sum_to_similarity_minus_baseline(tiny_model, layer):
    encoder = Encoder.load(tiny_model)
    explained = encoder.explain(QUERY, CODE, layer=layer, steps=48, dtype="float32")
    assert explained.layer == layer and explained.steps == 48
    for part in (explained.query, explained.document):
        change = explained.similarity - part.baseline
        assert sum(part.scores) == pytest.approx(change, abs=2e-3 + 0.01 * abs(change))


def test_lines_add_up_their_tokens(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    explained = encoder.explain(QUERY, CODE)
    lines = explained.document.lines
    assert [line.text for line in lines] == CODE.split("\n")[:4]
    assert [line.number for line in lines] == [1, 2, 3, 4]
    assert lines[2].score == 0.0  # the blank line has no tokens
    assert sum(line.score for line in lines) == pytest.approx(sum(explained.document.scores))
    first = [
        s
        for s, span in zip(explained.document.scores, explained.document.spans, strict=True)
        if span and span[0] < CODE.index("\n")
    ]
    assert lines[0].score == pytest.approx(sum(first))
    assert explained.query.lines is None  # a one-line text is prose
    assert encoder.explain(QUERY, CODE, lines=False).document.lines is None
    assert len(encoder.explain(QUERY, "one line", lines=True).document.lines) == 1


def test_the_json_form(tiny_llama):
    explained = Encoder.load(tiny_llama).explain(QUERY, CODE)
    data = json.loads(json.dumps(explained.to_dict()))
    assert set(data) == {"similarity", "layer", "steps", "query", "document"}
    document = data["document"]
    assert len(document["tokens"]) == len(document["scores"]) == len(document["spans"])
    assert document["lines"][0] == {
        "line": 1,
        "text": "def add(a, b):",
        "score": explained.document.lines[0].score,
    }
    assert "lines" not in data["query"]
    assert data["document"]["side"] == "document" and data["query"]["side"] == "query"


def test_symmetric_pairs_and_long_texts(tiny_bert):
    encoder = Encoder.load(tiny_bert, max_length=16)
    long = " ".join(["word"] * 40)
    explained = encoder.explain("word", long, document_side="query", dtype="float32")
    assert explained.document.side == "query" and explained.document.truncated
    assert len(explained.document.tokens) == 16
    assert explained.similarity == pytest.approx(_cosine(encoder, "word", long, "query"), abs=1e-5)


def test_bfloat16_explains_as_float32_does(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    exact = encoder.explain(QUERY, CODE, dtype="float32")
    cast = encoder.explain(QUERY, CODE, dtype="bfloat16")
    assert cast.similarity == pytest.approx(exact.similarity, abs=0.01)
    for a, b in [(exact.query, cast.query), (exact.document, cast.document)]:
        assert np.corrcoef(a.scores, b.scores)[0, 1] > 0.99


def test_mode_is_restored_and_no_gradients_are_left(tiny_bert):
    encoder = Encoder.load(tiny_bert).train()
    encoder.explain(QUERY, CODE)
    assert encoder.training and encoder.backbone.training
    assert all(p.grad is None for p in encoder.parameters())


def test_encode_in_another_thread_meanwhile_is_untouched(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    texts = ["a text to embed", CODE]
    expected = encoder.encode(texts, dtype="float32")
    done = threading.Event()

    def explain_repeatedly():
        while not done.is_set():
            encoder.explain(QUERY, CODE, dtype="float32")

    worker = threading.Thread(target=explain_repeatedly)
    worker.start()
    try:
        for _ in range(30):
            np.testing.assert_allclose(encoder.encode(texts, dtype="float32"), expected, atol=1e-6)
    finally:
        done.set()
        worker.join()


def test_bad_arguments(tiny_bert):
    encoder = Encoder.load(tiny_bert)
    layers = encoder.backbone.config.num_hidden_layers
    assert default_layer(6) == 4 and default_layer(30) == 20
    with pytest.raises(InputError, match="layer must be from 0"):
        encoder.explain(QUERY, CODE, layer=layers)
    with pytest.raises(InputError, match="steps"):
        encoder.explain(QUERY, CODE, steps=0)
    with pytest.raises(InputError, match="document_side"):
        encoder.explain(QUERY, CODE, document_side="both")
    with pytest.raises(TypeError, match="document must be a str"):
        encoder.explain(QUERY, [CODE])


def test_a_slow_tokenizer_is_refused(tiny_bert, monkeypatch):
    encoder = Encoder.load(tiny_bert)
    monkeypatch.setattr(type(encoder.tokenizer), "is_fast", False)
    with pytest.raises(InputError, match="needs a fast tokenizer"):
        encoder.explain(QUERY, CODE)


# ------------------------------------------------------------------ the real default model
@pytest.fixture(scope="module")
def minilm() -> Encoder:
    torch.manual_seed(0)
    return Encoder.load("default", device="cpu")


def _rank(part, word: str) -> int:
    order = np.argsort(-np.asarray(part.scores))
    return next(r for r, i in enumerate(order) if part.tokens[i].strip().lower() == word)


def test_a_word_both_texts_share_ranks_high(minilm):
    explained = minilm.explain("A man is playing a guitar.", "A man plays the guitar on stage.")
    assert _rank(explained.query, "guitar") == 0
    assert _rank(explained.document, "guitar") <= 1  # with "stage", a place to play one
    code = minilm.explain("python sort a dictionary by value", CODE.replace("add", "sort_dict"))
    assert code.similarity > 0.2
    assert _rank(code.document, "sort") == 0


def test_real_scores_sum_to_similarity_minus_baseline(minilm):
    explained = minilm.explain(QUERY, CODE, steps=32)
    for part in (explained.query, explained.document):
        change = explained.similarity - part.baseline
        assert sum(part.scores) == pytest.approx(change, rel=0.02)


def _cosqa_pairs(shared_data, n: int) -> list[tuple[str, str]]:
    folder = shared_data / "code_search" / "cosqa"
    qrels = (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    wanted = dict(line.split("\t")[:2] for line in qrels)
    queries = {}
    for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        queries[record["_id"]] = record["text"]
    corpus = {}
    for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["_id"] in wanted.values():
            corpus[record["_id"]] = record["text"]
    return [(queries[q], corpus[d]) for q, d in wanted.items()]


def test_deleting_the_top_tokens_costs_more_than_random_ones(minilm, shared_data):
    rng = random.Random(0)
    top_drops, random_drops = [], []
    for query, document in _cosqa_pairs(shared_data, 6):
        explained = minilm.explain(query, document)
        ids = minilm.tokens.encode([document], "document")[0]
        text = [i for i, special in enumerate(explained.document.special) if not special]
        k = max(1, len(text) // 10)
        top = sorted(text, key=lambda i: -explained.document.scores[i])[:k]
        cuts = [top] + [rng.sample(text, k) for _ in range(5)]
        sequences = [[t for j, t in enumerate(ids) if j not in set(cut)] for cut in cuts]
        with torch.inference_mode():
            vectors = minilm(minilm.tokens.pad(sequences, "document"))
            query_vector = minilm(minilm.tokenize([query]))[0]
        drops = explained.similarity - (vectors @ query_vector).numpy()
        top_drops.append(drops[0])
        random_drops.append(drops[1:].mean())
    assert np.mean(top_drops) > 3 * np.mean(random_drops) > 0
