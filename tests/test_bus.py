"""The NATS bus end to end: publishers, index workers (real processes), replicas, dead letters.

The codec and URL tests run anywhere; the rest need TOWNSQUARE_TEST_NATS and
TOWNSQUARE_TEST_POSTGRES and each uses its own stream and schema.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest

from conftest import write_jsonl
from townsquare.bus import BusConfig, IndexWorker, WorkerOptions, publish_source
from townsquare.bus.codec import DecodeError, decode, encode
from townsquare.bus.config import BusError
from townsquare.bus.publisher import PublishStats
from townsquare.config import load_settings
from townsquare.model import Delete, Identity, Post, Upsert, quarantine
from townsquare.retrieval import SearchRequest
from townsquare.runtime import Runtime
from townsquare.sources.jsonl import JsonlSource
from townsquare.store import SearchFilters, open_store
from townsquare.store.postgres import PostgresStore

NOW = datetime.now(UTC).replace(microsecond=0)


def posts_file(path: Path, n: int, start: int = 0) -> Path:
    records = [
        {"id": str(i), "author": f"user{i % 11}", "lang": "en",
         "text": f"bulletin {i} about the harbour ferry topic{i % 17}",
         "created_at": (NOW - timedelta(seconds=n - i)).isoformat()}
        for i in range(start, start + n)
    ]
    return write_jsonl(path, records)


# -- codec and configuration (no services) ------------------------------------


def test_every_event_round_trips_through_the_codec() -> None:
    p = Post(id="jsonl:1", source="jsonl", author="alice", text="Grève ✊ #greve @bob",
             created_at=NOW, lang="fr", url="https://ex.org/1", author_name="Alice",
             reply_to="jsonl:0", raw={"id": "1"})
    for ev in (Upsert(p), Delete("jsonl:1"), Identity("did:plc:x", "new.handle"),
               quarantine("rss", b"\xff<bad>", "no items")):
        back = decode(encode(ev, 1 << 20).data)
        assert back == ev


def test_message_ids_dedupe_replays_but_not_edits() -> None:
    p = Post(id="jsonl:1", source="jsonl", author="a", text="first", created_at=NOW)
    same = Post(id="jsonl:1", source="jsonl", author="a", text="first", created_at=NOW)
    edit = Post(id="jsonl:1", source="jsonl", author="a", text="first!", created_at=NOW)
    ids = [encode(Upsert(x), 1 << 20).msg_id for x in (p, same, edit)]
    assert ids[0] == ids[1] != ids[2] and ids[0].startswith("jsonl:1#")
    assert encode(Delete("jsonl:1"), 1 << 20).msg_id == "delete:jsonl:1"
    weird = encode(Delete("jsonl:a\r\nNats-Msg-Id: x"), 1 << 20).msg_id
    assert weird.startswith("sha256:") and "\n" not in weird


def test_a_post_too_large_for_the_bus_sheds_raw_then_becomes_quarantine() -> None:
    p = Post(id="jsonl:big", source="jsonl", author="a", text="x" * 1000, created_at=NOW,
             raw="r" * 5000)
    env = encode(Upsert(p), 3000)
    assert env.op == "upsert" and "raw" not in json.loads(env.data)["post"]
    env = encode(Upsert(p), 500)
    back = decode(env.data)
    assert env.op == "quarantine" and "byte limit" in back.reason  # type: ignore[union-attr]


@pytest.mark.parametrize("data, reason", [
    (b"not json", "not JSON"),
    (b"[1]", "expected a JSON object"),
    (b'{"v": 9, "op": "upsert"}', "unsupported message version"),
    (b'{"v": 1, "op": "frobnicate"}', "unknown op"),
    (b'{"v": 1, "op": "upsert"}', "without a post"),
    (b'{"v": 1, "op": "upsert", "post": {"id": "x", "source": "s", "author": "a", '
     b'"text": "t", "created_at": "yesterday"}}', "bad created_at"),
    (b'{"v": 1, "op": "upsert", "post": {"id": "x", "source": "s", "author": 5, '
     b'"text": "t", "created_at": 1}}', "'author'"),
    (b'{"v": 1, "op": "delete", "id": ""}', "'id'"),
])
def test_undecodable_messages_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(data)


def test_bus_url() -> None:
    cfg = BusConfig.from_url("nats://10.0.0.5:4222")
    assert (cfg.servers, cfg.stream, cfg.subject, cfg.kv) == (
        "nats://10.0.0.5:4222", "TOWNSQUARE_POSTS", "townsquare.posts", "TOWNSQUARE_CURSORS")
    assert cfg.subject_for("jetstream") == "townsquare.posts.jetstream"
    cfg = BusConfig.from_url("nats://h:1?stream=S1&dupe_window=10m&max_age=1d")
    assert (cfg.subject, cfg.kv, cfg.dupe_window_s, cfg.max_age_s) == (
        "s1.posts", "S1_CURSORS", 600, 86400)
    assert cfg.dead_stream == "S1_DEAD"
    with pytest.raises(BusError, match="unknown bus URL parameter"):
        BusConfig.from_url("nats://h:1?strem=x")
    with pytest.raises(BusError, match="not a NATS URL"):
        BusConfig.from_url("http://h:1")


# -- helpers for the live tests -------------------------------------------------


async def stream_messages(url: str, stream: str | None = None) -> int:
    cfg = BusConfig.from_url(url)
    nc = await nats.connect(cfg.servers)
    try:
        info = await nc.jetstream().stream_info(stream or cfg.stream)
        return int(info.state.messages)
    finally:
        await nc.close()


def count(store: PostgresStore, sql: str) -> int:
    with store.db.connection() as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def pg(pg_url: str, tmp_path: Path) -> Iterator[PostgresStore]:
    store = open_store(pg_url, tmp_path)
    assert isinstance(store, PostgresStore)
    yield store
    store.close()


def runtime_for(pg_url: str) -> Runtime:
    """One `serve` replica's view: its own store connection and in-process dense index."""
    return Runtime(load_settings(store=pg_url, embedder="hash"), read_only=True)


async def index_until_idle(store: PostgresStore, url: str, **kw: object) -> PublishStats:
    from townsquare.index import EMBEDDERS

    worker = IndexWorker(store, EMBEDDERS.create("hash"), BusConfig.from_url(url),
                         WorkerOptions(stop_when_idle=True, **kw))  # type: ignore[arg-type]
    return await asyncio.wait_for(worker.run(), timeout=120)  # type: ignore[return-value]


# -- live: publish, index, replicas ----------------------------------------------


@pytest.mark.nats
@pytest.mark.postgres
async def test_publish_index_and_search_from_two_replicas(
    tmp_path: Path, nats_url: str, pg_url: str, pg: PostgresStore
) -> None:
    f = posts_file(tmp_path / "posts.jsonl", 300)
    write_jsonl(f, [{"id": "7", "deleted": True}])
    with f.open("a") as fh:
        fh.write("this line is not json\n")
    stats = await publish_source(JsonlSource(str(f)), nats_url, quiet=True)
    assert (stats.posts, stats.deletes, stats.quarantined) == (300, 1, 1)
    # The cursor sits in the KV bucket: a restart publishes nothing again.
    again = await publish_source(JsonlSource(str(f)), nats_url, quiet=True)
    assert again.messages == 0
    # A second copy of the file is a different source (no cursor) with the same
    # posts: JetStream drops every one as a duplicate.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(f.read_bytes())
    dup = await publish_source(JsonlSource(str(copy)), nats_url, quiet=True)
    assert isinstance(dup, PublishStats)
    assert dup.duplicates == 302 and dup.posts == 0
    assert await stream_messages(nats_url) == 302

    result = await index_until_idle(pg, nats_url, batch=64)
    assert result.posts == 300 and result.deletes == 1 and result.quarantined == 1
    assert count(pg, "SELECT count(*) FROM posts") == 299
    assert pg.quarantined()[0].reason.startswith("invalid JSON")
    assert pg.stats()["vectors"] == 299

    replicas = [runtime_for(pg_url), runtime_for(pg_url)]
    try:
        for rt in replicas:
            for mode in ("lexical", "dense", "hybrid"):
                hits = rt.retriever.search(SearchRequest("bulletin 42 harbour", mode=mode))
                assert "jsonl:42" in [h.post.id for h in hits], mode  # type: ignore[arg-type]
            assert rt.retriever.dense is not None and len(rt.retriever.dense) == 299
            assert rt.store.get_post("jsonl:7") is None
        # A post indexed after the replicas started reaches both without a restart.
        more = posts_file(tmp_path / "more.jsonl", 5, start=1000)
        await publish_source(JsonlSource(str(more)), nats_url, quiet=True)
        await index_until_idle(pg, nats_url)
        for rt in replicas:
            rt.retriever.sync_dense(force=True)
            hits = rt.retriever.search(SearchRequest("bulletin 1003", mode="dense",
                                                     filters=SearchFilters(authors=["user2"])))
            assert [h.post.id for h in hits][:1] == ["jsonl:1003"]
    finally:
        for rt in replicas:
            rt.close()


@pytest.mark.nats
@pytest.mark.postgres
async def test_edits_pass_the_bus_and_replays_do_not(
    tmp_path: Path, nats_url: str, pg: PostgresStore
) -> None:
    rec = {"id": "e", "author": "a", "text": "draft text", "created_at": NOW.isoformat()}
    f1 = write_jsonl(tmp_path / "1.jsonl", [rec])
    f2 = write_jsonl(tmp_path / "2.jsonl", [rec])  # the same post again
    f3 = write_jsonl(tmp_path / "3.jsonl", [{**rec, "text": "final text"}])
    for f in (f1, f2, f3):
        await publish_source(JsonlSource(str(f)), nats_url, quiet=True)
    assert await stream_messages(nats_url) == 2
    await index_until_idle(pg, nats_url)
    assert pg.get_post("jsonl:e").text == "final text"  # type: ignore[union-attr]


# -- live: two worker processes, one killed mid-stream ---------------------------


def worker_process(pg_url: str, nats_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "townsquare", "--store", pg_url, "index", "--from", nats_url,
         "--batch", "200", "--ack-wait", "2", "--stop-when-idle", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.nats
@pytest.mark.postgres
async def test_two_workers_one_killed_mid_stream_store_every_post_exactly_once(
    tmp_path: Path, nats_url: str, pg_url: str, pg: PostgresStore
) -> None:
    n = 12_000
    f = posts_file(tmp_path / "posts.jsonl", n)
    await publish_source(JsonlSource(str(f)), nats_url, quiet=True)
    # The workers create the consumer with a 2 s ack_wait: the killed worker's
    # unacknowledged messages come back to the survivor within seconds.
    a, b = worker_process(pg_url, nats_url), worker_process(pg_url, nats_url)
    try:
        deadline = time.monotonic() + 90
        while count(pg, "SELECT count(*) FROM posts") < n // 5:
            assert a.poll() is None and b.poll() is None, (a.stderr, b.stderr)
            assert time.monotonic() < deadline, "workers stored nothing"
            await asyncio.sleep(0.02)
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        at_kill = count(pg, "SELECT count(*) FROM posts")
        assert at_kill < n, "the stream was already done: nothing was killed mid-stream"
        code = await asyncio.to_thread(b.wait, 180)
        assert code == 0, b.stderr.read() if b.stderr else ""
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert count(pg, "SELECT count(*) FROM posts") == n
    assert count(pg, "SELECT count(DISTINCT id) FROM posts") == n
    assert count(pg, "SELECT count(*) FROM post_ids") == n
    assert count(pg, "SELECT count(*) FROM embeddings") == n
    # Two replicas (separate processes) find a post each worker could have stored.
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "townsquare", "--store", pg_url, "search",
             "bulletin 11999 harbour", "--json", "-n", "3"],
            capture_output=True, check=True,
        ).stdout
        assert "jsonl:11999" in [h["id"] for h in json.loads(out)]


# -- live: dead letters -------------------------------------------------------------


@pytest.mark.nats
@pytest.mark.postgres
async def test_dead_letters_go_to_the_quarantine(
    tmp_path: Path, nats_url: str, pg: PostgresStore
) -> None:
    cfg = BusConfig.from_url(nats_url)
    from townsquare.bus.config import ensure_stream
    from townsquare.bus.worker import bind_consumer

    options = WorkerOptions(max_deliver=2, ack_wait_s=1.0, stop_when_idle=True)
    worker = IndexWorker(pg, None, cfg, options)
    nc = await nats.connect(cfg.servers)
    try:
        js = nc.jetstream()
        await ensure_stream(js, cfg)
        await bind_consumer(js, cfg.stream, worker.consumer_config())
        subject = cfg.subject_for("jsonl")
        post = Post(id="jsonl:poison", source="jsonl", author="a", text="crashes workers",
                    created_at=NOW)
        await js.publish(subject, encode(Upsert(post), 1 << 20).data)
        # A worker that takes the message and dies before acking, every time.
        sub = await js.pull_subscribe_bind(durable=options.durable, stream=cfg.stream)
        for _ in range(options.max_deliver):
            (msg,) = await sub.fetch(1, timeout=10)
            assert msg.metadata.num_delivered >= 1
        with pytest.raises((nats.errors.TimeoutError, asyncio.TimeoutError)):
            await sub.fetch(1, timeout=3)  # ack_wait passes: deliveries are exhausted
        await sub.unsubscribe()
        deadline = time.monotonic() + 30
        while await stream_messages(nats_url, cfg.dead_stream) < 1:
            assert time.monotonic() < deadline, "no MAX_DELIVERIES advisory captured"
            await asyncio.sleep(0.1)
        # Messages that are not townsquare events at all.
        await js.publish(subject, b"\x00\x01 binary junk")
        await js.publish(subject, b'{"v": 1, "op": "upsert", "post": {"id": "x"}}')
    finally:
        await nc.close()

    await asyncio.wait_for(worker.run(), timeout=60)
    reasons = {r.reason: r.raw for r in pg.quarantined()}
    dead = [r for r in reasons if "delivered 2 times" in r]
    assert len(dead) == 1 and b"crashes workers" in reasons[dead[0]]
    assert sum("undecodable" in r and "not JSON" in r for r in reasons) == 1
    assert sum("undecodable" in r and "'source'" in r for r in reasons) == 1
    assert pg.get_post("jsonl:poison") is None
