"""The server's counts for GET /metrics, in Prometheus text written by prometheus_client.

Each app has its own CollectorRegistry, so two apps in one process do not share counts.
The counts are plain numbers updated on the event loop (the guard and the routes, the
batcher's own stats) and read into metric families when scraped: no lock on the request
path, and no `_created` series, which prometheus_client's Counter adds unless disabled for
the whole process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cpt_embed.serve.batcher import MicroBatcher

# What generate_latest writes: the Prometheus text format, version 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """Requests and time per path, tokens embedded, and the batcher's work and queue."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.seconds: Counter[str] = Counter()
        self.tokens = 0
        self._batcher = batcher
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def record(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request to `path` (a route, or "other")."""
        self.requests[(path, status)] += 1
        self.seconds[path] += seconds

    def collect(self) -> Iterator[Metric]:
        """The metric families as they stand now (prometheus_client's Collector)."""
        requests = CounterMetricFamily(
            "cpt_requests_total",
            "HTTP requests by path and status code.",
            labels=["path", "status"],
        )
        for (path, status), count in sorted(self.requests.items()):
            requests.add_metric([path, str(status)], count)
        seconds = CounterMetricFamily(
            "cpt_request_seconds_total", "Time spent answering, by path.", labels=["path"]
        )
        for path, total in sorted(self.seconds.items()):
            seconds.add_metric([path], total)
        stats = self._batcher.stats
        yield from (
            requests,
            seconds,
            CounterMetricFamily("cpt_tokens_total", "Tokens embedded (usage).", self.tokens),
            CounterMetricFamily("cpt_embedded_texts_total", "Texts embedded.", stats.texts),
            CounterMetricFamily(
                "cpt_batches_total", "Forward passes (micro-batches).", stats.batches
            ),
            CounterMetricFamily(
                "cpt_rejected_total", "Requests refused: queue full.", stats.rejected
            ),
            GaugeMetricFamily(
                "cpt_queued_texts", "Texts waiting in the queue.", self._batcher.queued
            ),
        )

    def render(self) -> bytes:
        """The Prometheus text of every metric (CONTENT_TYPE)."""
        return generate_latest(self.registry)
