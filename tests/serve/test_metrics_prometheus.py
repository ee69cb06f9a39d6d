"""GET /metrics: every metric by name, label and meaning, read back with prometheus_client's
parser; each app counts for itself."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from cpt_embed.serve.app import create_app

HELP = {
    "cpt_requests": ("counter", "HTTP requests by path and status code."),
    "cpt_request_seconds": ("counter", "Time spent answering, by path."),
    "cpt_tokens": ("counter", "Tokens embedded (usage)."),
    "cpt_embedded_texts": ("counter", "Texts embedded."),
    "cpt_batches": ("counter", "Forward passes (micro-batches)."),
    "cpt_rejected": ("counter", "Requests refused: queue full."),
    "cpt_queued_texts": ("gauge", "Texts waiting in the queue."),
}


def _scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of GET /metrics, checking the families."""
    response = client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(response.text))
    assert {f.name: (f.type, f.documentation) for f in families} == HELP
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_metrics_count_requests_time_tokens_texts_and_batches(client, encoder):
    texts = ["one text", "and another one"]
    client.post("/v1/embeddings", json={"model": "default", "input": texts})
    client.post("/v1/embeddings", json={"model": "other", "input": "x"})
    client.get("/nowhere")
    samples = _scrape(client)
    requests = {labels: n for (name, labels), n in samples.items() if name == "cpt_requests_total"}
    assert requests == {
        (("path", "/v1/embeddings"), ("status", "200")): 1,
        (("path", "/v1/embeddings"), ("status", "404")): 1,
        (("path", "other"), ("status", "404")): 1,
    }
    seconds = {labels for name, labels in samples if name == "cpt_request_seconds_total"}
    assert seconds == {(("path", "/v1/embeddings"),), (("path", "other"),)}
    assert samples[("cpt_request_seconds_total", (("path", "/v1/embeddings"),))] > 0
    tokens = sum(len(ids) for ids in encoder.tokenizer(texts)["input_ids"])
    assert samples[("cpt_tokens_total", ())] == tokens
    assert samples[("cpt_embedded_texts_total", ())] == 2
    assert samples[("cpt_batches_total", ())] == 1
    assert samples[("cpt_rejected_total", ())] == 0
    assert samples[("cpt_queued_texts", ())] == 0
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_refusals_of_a_full_queue_are_counted(encoder):
    with TestClient(create_app(encoder, "default", max_queue=1)) as client:
        client.post("/v1/embeddings", json={"model": "default", "input": ["a", "b"]})
        samples = _scrape(client)
    assert samples[("cpt_rejected_total", ())] == 1
    assert samples[("cpt_requests_total", (("path", "/v1/embeddings"), ("status", "503")))] == 1


def test_two_apps_in_one_process_count_for_themselves(encoder):
    rounds = 2
    with (
        TestClient(create_app(encoder, "default")) as busy,
        TestClient(create_app(encoder, "default")) as idle,
    ):
        for _ in range(rounds):
            busy.post("/v1/embeddings", json={"model": "default", "input": "x"})
        busy_samples, idle_samples = _scrape(busy), _scrape(idle)
    key = ("cpt_requests_total", (("path", "/v1/embeddings"), ("status", "200")))
    assert busy_samples[key] == rounds and key not in idle_samples
    assert busy_samples[("cpt_embedded_texts_total", ())] == rounds
    assert idle_samples[("cpt_embedded_texts_total", ())] == 0
