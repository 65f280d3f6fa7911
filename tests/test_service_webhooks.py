"""Webhooks: refused destinations (at creation, at connect time, on redirects), isolation
between destinations, the circuit breaker, and signatures a receiver can verify."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from service_helpers import Api, error_of, serve_app
from test_service_watches import FedSource, fresh, uvicorn_app
from townsquare.store import open_store
from townsquare.watches import SavedWatches, Watch, WatchHub
from townsquare.watches.webhooks import (
    DestinationGuard,
    DestinationRefused,
    WebhookDispatcher,
    verify,
)


@dataclass
class Receiver:
    """A loopback HTTP server that records each POST and answers as told."""

    url: str
    got: queue.Queue[tuple[dict[str, str], bytes]] = field(default_factory=queue.Queue)
    hits: int = 0


@contextmanager
def receiver(
    status: int = 204, stall_s: float = 0.0, location: Callable[[], str] | None = None
) -> Iterator[Receiver]:
    rec = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.hits += 1
            if stall_s:
                time.sleep(stall_s)  # a receiver that takes the request and never answers
            rec.got.put(({k: v for k, v in self.headers.items()}, body))
            if location is not None:
                self.send_response(307)
                self.send_header("Location", location())
            else:
                self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


REFUSED = [
    "http://127.0.0.1:9/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://127.0.0.1@evil.example/",
    "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.1.2.3/hook",
    "http://100.64.0.1/hook",
    "http://localhost:8080/",
    "http://0.0.0.0/",
    "ftp://example.org/",
]


async def test_private_and_metadata_destinations_are_refused_at_creation() -> None:
    async with serve_app() as api:
        h = Api.auth(api.key("a"))
        for url in REFUSED:
            resp = await api.client.post("/v1/watches", headers=h,
                                         json={"query": "storm", "webhook_url": url})
            assert resp.status_code == 400, (url, resp.text)
            assert error_of(resp)["param"] == "webhook_url"
        listed = (await api.client.get("/v1/watches", headers=h)).json()["data"]
        assert listed == []


async def test_the_operator_allowlist_admits_a_self_hosted_receiver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOWNSQUARE_WEBHOOK_ALLOW", '["127.0.0.1", "10.0.0.0/8"]')
    async with serve_app() as api:
        h = Api.auth(api.key("a"))
        for url in ("http://127.0.0.1:9/x", "http://10.1.2.3/hook"):
            resp = await api.client.post("/v1/watches", headers=h,
                                         json={"query": "storm", "webhook_url": url})
            assert resp.status_code == 200, resp.text
            assert resp.json()["secret"].startswith("whsec_")
        resp = await api.client.post("/v1/watches", headers=h, json={
            "query": "storm", "webhook_url": "http://169.254.169.254/"})
        assert resp.status_code == 400  # the allowlist names what it allows, nothing else


def test_dns_rebinding_is_caught_at_connect_time() -> None:
    with receiver() as rec:
        port = rec.url.split(":")[2].split("/")[0]
        answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # public at creation, then loopback
        guard = DestinationGuard(resolve=lambda host, port: next(answers))
        url = f"http://rebind.example:{port}/hook"
        assert guard.check(url).address == "93.184.216.34"
        hooks = WebhookDispatcher(guard, attempts=1)
        try:
            hooks.submit(1, url, "whsec_x", {"n": 1})
            wait_until(lambda: hooks.stats.refused == 1)
            assert rec.hits == 0
        finally:
            hooks.close()
    with pytest.raises(DestinationRefused):
        DestinationGuard(resolve=lambda h, p: ["8.8.8.8", "10.0.0.7"]).check("http://x.example/")


def test_each_redirect_hop_is_checked() -> None:
    with receiver() as inner:
        inner_port = inner.url.split(":")[2].split("/")[0]
        with receiver(location=lambda: inner.url) as outer:
            outer_port = outer.url.split(":")[2].split("/")[0]
            only_outer = WebhookDispatcher(DestinationGuard([f"127.0.0.1:{outer_port}"]),
                                           attempts=1)
            try:
                only_outer.submit(1, outer.url, "whsec_x", {"n": 1})
                wait_until(lambda: only_outer.stats.refused == 1)
                assert outer.hits == 1 and inner.hits == 0  # the private hop was never called
            finally:
                only_outer.close()
            both = WebhookDispatcher(DestinationGuard([f"127.0.0.1:{outer_port}",
                                                       f"127.0.0.1:{inner_port}"]))
            try:
                both.submit(1, outer.url, "whsec_x", {"n": 2})
                wait_until(lambda: both.stats.delivered == 1)
                assert inner.hits == 1
            finally:
                both.close()


def _hub(tmp: Path, hooks: WebhookDispatcher) -> WatchHub:
    return WatchHub(SavedWatches(open_store(str(tmp / "watches.db"), tmp)), webhooks=hooks)


def test_a_stalling_receiver_does_not_delay_another_keys_deliveries(tmp_path: Path) -> None:
    with receiver(stall_s=20) as stalled, receiver() as good:
        hooks = WebhookDispatcher(DestinationGuard(["127.0.0.1"]), timeout_s=30, attempts=1)
        hub = _hub(tmp_path, hooks)
        try:
            hub.saved.add(Watch(id="w1", owner=1, query="flood", min_terms=1,
                                webhook_url=stalled.url))
            good_watch = Watch(id="w2", owner=2, query="flood", min_terms=1,
                               webhook_url=good.url)
            hub.saved.add(good_watch)
            for i in range(10):
                hub.listener([fresh(f"p{i}", text=f"flood number {i}")], [])
            # One shared sender would wait out the stalled receiver (20 s) per event first.
            wait_until(lambda: good.got.qsize() == 10, timeout=15)
            assert stalled.hits == 1  # its own queue waits behind its own first delivery
            headers, body = good.got.get()
            assert verify(good_watch.secret, headers, body)
        finally:
            hooks.close()


def test_the_circuit_breaker_stops_calling_a_failing_receiver(tmp_path: Path) -> None:
    with receiver(status=500) as failing:
        hooks = WebhookDispatcher(DestinationGuard(["127.0.0.1"]), attempts=2, backoff_s=0.01,
                                  breaker_failures=2, breaker_cooldown_s=60)
        try:
            for i in range(6):
                hooks.submit(1, failing.url, "whsec_x", {"n": i})
            wait_until(lambda: hooks.stats.failed + hooks.stats.dropped == 6)
            assert hooks.stats.failed == 2 and hooks.stats.dropped == 4
            assert failing.hits == 4  # two deliveries, two attempts each, then nothing
        finally:
            hooks.close()


async def test_deliveries_are_signed_with_the_watchs_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = FedSource()
    with receiver() as rec:
        async with uvicorn_app(source) as (_, api):
            h = Api.auth(api.key("a"))
            made = (await api.client.post("/v1/watches", headers=h, json={
                "query": "harbour flood", "webhook_url": rec.url})).json()
            secret = made["secret"]
            assert "secret" not in (await api.client.get("/v1/watches", headers=h)).json()[
                "data"][0]
            source.feed.put([fresh("hit", text="Flood in the harbour")])
            headers, body = await asyncio.to_thread(rec.got.get, True, 30)
            # Verification exactly as docs/SECURITY.md tells a receiver to do it.
            timestamp = headers["X-Townsquare-Timestamp"]
            expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                                hashlib.sha256).hexdigest()
            assert headers["X-Townsquare-Signature"] == f"v1={expected}"
            assert abs(time.time() - int(timestamp)) < 60
            assert headers["X-Townsquare-Event-Id"].startswith("evt_")
            assert not verify("whsec_wrong", headers, body)
            assert not verify(secret, headers, body + b" ")
            rotated = (await api.client.post(f"/v1/watches/{made['id']}/secret",
                                             headers=h)).json()["secret"]
            assert rotated != secret and rotated.startswith("whsec_")
            other = Api.auth(api.key("b"))
            resp = await api.client.post(f"/v1/watches/{made['id']}/secret", headers=other)
            assert resp.status_code == 404
