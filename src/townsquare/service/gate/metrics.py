"""Prometheus metrics, in a registry of the app's own (two apps in one process never mix).

Request figures are counted by the middleware as requests finish; source and
store figures are read when scraped, from the supervisor and a cached
``Store.stats()`` (a scrape must not count a million rows each time).

    townsquare_http_requests_total{route,method,status}
    townsquare_http_request_duration_seconds{route}         histogram (whole response)
    townsquare_http_requests_in_flight
    townsquare_tokens_total{model,kind="prompt|completion"}
    townsquare_rate_limited_total{reason}
    townsquare_answers_degraded_total                      search-only answers (LLM down)
    townsquare_ingest_posts_total{source}                  committed by this process
    townsquare_ingest_posts_per_second{source}
    townsquare_ingest_lag_seconds{source}                  source time -> commit
    townsquare_ingest_newest_post_age_seconds{source}
    townsquare_ingest_quarantined_total{source}
    townsquare_source_up{source}                           1 connected, 0 not
    townsquare_source_status{source,status}                1 for the current status
    townsquare_source_restarts_total{source}
    townsquare_store_posts{source}                         all posts in the store
    townsquare_store_quarantine_records
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from townsquare.ingest.supervisor import Supervisor

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_STATUSES = ("connecting", "running", "unreachable", "failed", "stopped")


class CachedStats:
    """``Store.stats()`` at most every ``ttl`` seconds (it counts rows)."""

    def __init__(self, fetch: Callable[[], dict[str, Any]], ttl: float = 5.0) -> None:
        self.fetch = fetch
        self.ttl = ttl
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._value is None or now - self._at > self.ttl:
            self._value = self.fetch()
            self._at = now
        return self._value


class _LiveCollector(Collector):
    def __init__(self, supervisor: Supervisor | None, stats: CachedStats | None) -> None:
        self.supervisor = supervisor
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        labels = ["source"]
        posts = CounterMetricFamily("townsquare_ingest_posts", "Posts committed by this process",
                                    labels=labels)
        rate = GaugeMetricFamily("townsquare_ingest_posts_per_second",
                                 "Posts committed per second (last 10 s)", labels=labels)
        lag = GaugeMetricFamily("townsquare_ingest_lag_seconds",
                                "Source event time to commit, newest batch", labels=labels)
        age = GaugeMetricFamily("townsquare_ingest_newest_post_age_seconds",
                                "Age of the newest committed post", labels=labels)
        quarantined = CounterMetricFamily("townsquare_ingest_quarantined",
                                          "Records quarantined by this process", labels=labels)
        up = GaugeMetricFamily("townsquare_source_up", "1 if the source is connected",
                               labels=labels)
        status = GaugeMetricFamily("townsquare_source_status", "1 for the source's status",
                                   labels=["source", "status"])
        restarts = CounterMetricFamily("townsquare_source_restarts",
                                       "Times the supervisor restarted the source", labels=labels)
        for s in self.supervisor.statuses() if self.supervisor is not None else []:
            posts.add_metric([s.name], s.posts)
            rate.add_metric([s.name], s.posts_per_s)
            if s.lag_s is not None:
                lag.add_metric([s.name], s.lag_s)
            if s.newest_post_age_s is not None:
                age.add_metric([s.name], s.newest_post_age_s)
            quarantined.add_metric([s.name], s.quarantined)
            up.add_metric([s.name], 1.0 if s.connected else 0.0)
            for name in _STATUSES:
                status.add_metric([s.name, name], 1.0 if s.status == name else 0.0)
            restarts.add_metric([s.name], s.restarts)
        yield from (posts, rate, lag, age, quarantined, up, status, restarts)
        if self.stats is not None:
            data = self.stats.get()
            stored = GaugeMetricFamily("townsquare_store_posts", "Posts in the store",
                                       labels=labels)
            for name, s in data.get("sources", {}).items():
                stored.add_metric([name], s["posts"])
            yield stored
            yield GaugeMetricFamily("townsquare_store_quarantine_records",
                                    "Quarantined records in the store",
                                    value=data.get("quarantined", 0))


class Metrics:
    def __init__(
        self, supervisor: Supervisor | None = None, stats: CachedStats | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("townsquare_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "townsquare_http_request_duration_seconds", "Time to answer, whole response",
            ["route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                     30, 60),
        )
        self.in_flight = Gauge("townsquare_http_requests_in_flight", "Requests being answered",
                               registry=r)
        self.tokens = Counter("townsquare_tokens", "LLM tokens metered", ["model", "kind"],
                              registry=r)
        self.rate_limited = Counter("townsquare_rate_limited", "Requests refused by a limit",
                                    ["reason"], registry=r)
        self.degraded = Counter("townsquare_answers_degraded",
                                "Answers given search-only because the LLM was unavailable",
                                registry=r)
        r.register(_LiveCollector(supervisor, stats))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "completion").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)
