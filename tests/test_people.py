"""People, threads and engagement, through the store contract (SQLite and PostgreSQL),
the HTTP API, the CLI, and the identity lookup against a loopback server."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from factories import make_post
from replay_servers import HttpReplayServer, Reply, Seen
from service_helpers import Api, add_posts, error_of, serve_app
from townsquare.cli import main
from townsquare.ingest.identity import PROFILES_PATH, IdentityLookup
from townsquare.model import Engage, Identity, Post, Upsert
from townsquare.store import SearchFilters, Store, open_store

NOW = datetime.now(UTC).replace(microsecond=0)
DUPONT = "did:plc:dupontjeanxyz"


post = partial(make_post, now=NOW, url=None)


def bsky(rkey: str, did: str, text: str, minutes: float, **kw: Any) -> Post:
    return post(f"at://{did}/app.bsky.feed.post/{rkey}", did, text, minutes, source="bluesky",
                author_id=did, url=f"https://bsky.app/profile/{did}/post/{rkey}", **kw)


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url, tmp_path)
    yield s
    s.close()


# --- the store: directory, handles, counts, threads, filters ------------------------


def test_ingest_keeps_the_directory_and_a_replay_counts_nothing_twice(store: Store) -> None:
    posts = [
        post("1", "elodie", "Grève à Lyon", 30, author_name="Élodie Martin"),
        post("2", "elodie", "Toujours en grève", 10, author_name="Élodie Martin"),
        post("3", "bob", "Storm tonight", 5),
    ]
    store.apply("s", [Upsert(p) for p in posts], "c1")
    store.apply("s", [Upsert(p) for p in posts], "c1")  # the rewind after a reconnect
    author = store.get_author("ELODIE")
    assert author is not None and author.posts == 2 and author.display_name == "Élodie Martin"
    assert author.first_seen == posts[0].created_at and author.last_seen == posts[1].created_at
    assert [a.id for a, n in store.find_authors(["elodie", "martin"]) if n == 2] == ["elodie"]
    assert [a.id for a, _ in store.find_authors(["MARTÍN"])] == ["elodie"]  # accents folded


def test_dids_become_handles_for_stored_and_later_posts(store: Store) -> None:
    store.apply("s", [Upsert(bsky("a", DUPONT, "first", 20))], "c1")
    assert store.get_post(f"bluesky:at://{DUPONT}/app.bsky.feed.post/a").author == DUPONT
    store.apply("s", [Identity(DUPONT, "jdupont.bsky.social", "Jean Dupont")], "c2")
    store.apply("s", [Upsert(bsky("b", DUPONT, "second", 10))], "c3")
    for rkey in "ab":
        got = store.get_post(f"bluesky:at://{DUPONT}/app.bsky.feed.post/{rkey}")
        assert got is not None and got.author == "jdupont.bsky.social"
    author = store.get_author("@jdupont.bsky.social")
    assert author is not None and author.id == DUPONT and author.posts == 2
    assert [a.id for a, _ in store.find_authors(["dupont"])] == [DUPONT]
    assert store.authors_to_look_up("bluesky", 10, NOW) == []
    hits = store.recent(SearchFilters(authors=["jdupont.bsky.social"]), 10)
    assert len(hits) == 2


def test_engagement_counts_replies_quotes_and_reported_counts(store: Store) -> None:
    parent = post("p", "alice", "Is the bridge open?", 60)
    store.apply("s", [
        Engage("jsonl:p", likes=1, record="at://x/app.bsky.feed.like/1"),  # before its post
        Upsert(parent),
        Engage("jsonl:p", likes=1), Engage("jsonl:p", reposts=1),
        Upsert(post("r1", "bob", "yes", 50, reply_to="jsonl:p")),
        Upsert(post("q1", "carol", "look at this", 40, quote_of="jsonl:p")),
    ], "c1")
    store.apply("s", [Upsert(post("r1", "bob", "yes", 50, reply_to="jsonl:p"))], "c2")
    got = store.get_post("jsonl:p")
    assert got is not None
    assert (got.likes, got.reposts, got.replies, got.quotes) == (2, 1, 1, 1)
    # A source that reports counts (Mastodon) replaces them, text unchanged or not.
    store.apply("s", [Upsert(post("p", "alice", "Is the bridge open?", 60, likes=40,
                                  replies=7))], "c3")
    got = store.get_post("jsonl:p")
    assert got is not None and (got.likes, got.reposts, got.replies) == (40, 1, 7)
    assert [p.id for p in store.related_posts("jsonl:p", "replies")] == ["jsonl:r1"]
    assert [p.id for p in store.related_posts("jsonl:p", "quotes")] == ["jsonl:q1"]
    liked = store.recent(SearchFilters(min_likes=10), 10)
    assert [store.posts_by_keys([c.key])[c.key].id for c in liked] == ["jsonl:p"]


def test_domain_filters_and_scopes_in_sql(store: Store) -> None:
    store.apply("s", [
        Upsert(post("1", "a", "x", 5, url="https://www.lemonde.fr/a")),
        Upsert(post("2", "b", "x", 4, url="https://news.lemonde.fr/b")),
        Upsert(post("3", "c", "x", 3, url="https://mylemonde.fr/c")),
        Upsert(post("4", "d", "x", 2, source="rss", url="https://reuters.com/d")),
        Upsert(post("5", "e", "x", 1)),
    ], "c")

    def ids(f: SearchFilters) -> set[str]:
        cands = store.recent(f, 10)
        posts = store.posts_by_keys([c.key for c in cands])
        got = {p.id for p in posts.values()}
        assert got == {p.id for p in posts.values() if f.matches(p)}  # SQL == Python
        return got

    assert ids(SearchFilters(domains=["lemonde.fr"])) == {"jsonl:1", "jsonl:2"}
    assert ids(SearchFilters(exclude_domains=["lemonde.fr"])) == {"jsonl:3", "rss:4", "jsonl:5"}
    scoped = SearchFilters(scopes=[SearchFilters(sources=["rss"]),
                                   SearchFilters(authors=["a"], domains=["lemonde.fr"])])
    assert ids(scoped) == {"rss:4", "jsonl:1"}


# --- HTTP: authors, names in questions, who is, threads ------------------------------

PEOPLE = [
    bsky("d1", DUPONT, "The rail strike must end with a fair deal for workers", 30),
    bsky("d2", DUPONT, "I met the unions this morning about the strike", 90),
    post("o1", "angryuser", "Dupont is lying about the strike, as always", 10),
    post("o2", "reporter", "Strike: trains cancelled across the region", 20),
    post("m1", "paul.martin", "Martin here: the strike is hurting small shops", 40,
         author_name="Paul Martin"),
    post("m2", "anne.martin", "Anne Martin: the strike is justified", 50,
         author_name="Anne Martin"),
]


async def _people_api(api: Api) -> None:
    await asyncio.to_thread(api.runtime.store.apply, "s",
                            [Identity(DUPONT, "jdupont.bsky.social", "Jean Dupont")], "c")


def shown_authors(api: Api) -> list[str]:
    prompt = "\n".join(m.content for m in api.llm.last_messages)
    return re.findall(r"^\[\d+\] @(\S+)", prompt, re.MULTILINE)


async def test_names_in_a_question_filter_or_boost_the_speakers() -> None:
    async with serve_app(PEOPLE) as api:
        await _people_api(api)
        # A namesake known only from an identity event never posted: it cannot be the speaker.
        await asyncio.to_thread(api.runtime.store.apply, "s", [
            Identity("did:plc:ghost", "ghost.bsky.social", "Jean Dupont")], "c")
        h = Api.auth(api.key("k"))

        async def ask(q: str, **extra: Any) -> dict[str, Any]:
            resp = await api.client.post("/v1/chat/completions", headers=h, json={
                "messages": [{"role": "user", "content": q}], **extra})
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

        body = await ask("What does Dupont say about the strike?")
        assert set(shown_authors(api)) == {"jdupont.bsky.social"}  # not the insult
        assert {c["author"] for c in body["citations"]} == {"jdupont.bsky.social"}
        await ask("que pense jean DUPONT de la grève ?")
        assert set(shown_authors(api)) == {"jdupont.bsky.social"}
        # Two Martins: a boost (the best two posts are theirs), not a filter.
        await ask("what is Martin saying about the strike?",
                  search_parameters={"max_search_results": 2})
        assert set(shown_authors(api)) == {"paul.martin", "anne.martin"}
        await ask("what is Martin saying about the strike?")
        assert len(set(shown_authors(api))) > 2
        await ask("what are people saying about Dupont?")  # the topic, not the speaker
        assert "angryuser" in shown_authors(api)


async def test_who_is_answers_from_the_accounts_own_posts() -> None:
    async with serve_app(PEOPLE) as api:
        await _people_api(api)
        h = Api.auth(api.key("k"))
        for q in ("who is @jdupont.bsky.social?", "Who is Jean Dupont?"):
            resp = await api.client.post("/v1/chat/completions", headers=h, json={
                "messages": [{"role": "user", "content": q}]})
            assert resp.status_code == 200
            assert set(shown_authors(api)) == {"jdupont.bsky.social"}, q
            assert {c["author"] for c in resp.json()["citations"]} == {"jdupont.bsky.social"}


async def test_an_account_that_said_nothing_is_not_given_others_words() -> None:
    """"What does @x say?" when @x has no such posts: said plainly, then others' posts that
    mention @x, each quoted under its own author; never an answer in @x's name."""
    posts = [*PEOPLE,
             post("r1", "traveller", "@railco the strike stranded us at the station", 15),
             post("r2", "commuter", "@railco when do trains run again after the strike?", 25)]
    async with serve_app(posts) as api:
        h = Api.auth(api.key("k"))

        async def ask(q: str) -> dict[str, Any]:
            resp = await api.client.post("/v1/chat/completions", headers=h, json={
                "messages": [{"role": "user", "content": q}]})
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

        body = await ask("what does @railco say about the strike?")
        text = body["choices"][0]["message"]["content"]
        assert text.startswith("I found no posts by @railco about that. "
                               "Posts that mention @railco:")
        assert {c["author"] for c in body["citations"]} == {"traveller", "commuter"}
        assert "@traveller" in text and "@commuter" in text
        body = await ask("que dit @railco de la grève ?")
        assert body["choices"][0]["message"]["content"].startswith(
            "Je n'ai trouvé aucun message de @railco à ce sujet.")
        body = await ask("what does @nobody say about the strike?")
        assert body["choices"][0]["message"]["content"] == (
            "I found no posts by @nobody about that.")
        assert body["citations"] == []


async def test_authors_route_lists_and_shows_accounts() -> None:
    async with serve_app(PEOPLE) as api:
        await _people_api(api)
        h = Api.auth(api.key("k"))
        found = (await api.client.get("/v1/authors", params={"q": "dupont"}, headers=h)).json()
        assert [a["handle"] for a in found["data"]] == ["jdupont.bsky.social"]
        assert found["data"][0]["display_name"] == "Jean Dupont"
        martins = (await api.client.get("/v1/authors?q=martin", headers=h)).json()["data"]
        assert {a["handle"] for a in martins} == {"paul.martin", "anne.martin"}
        one = await api.client.get("/v1/authors/@jdupont.bsky.social", headers=h)
        assert one.status_code == 200 and one.json()["id"] == DUPONT
        assert [p["id"] for p in one.json()["recent_posts"]] == [PEOPLE[0].id, PEOPLE[1].id]
        missing = await api.client.get("/v1/authors/nobody", headers=h)
        assert missing.status_code == 404 and error_of(missing)["code"] == "author_not_found"
        search = (await api.client.post("/v1/search", headers=h, json={"query": "unions"}))
        assert search.json()["data"][0]["author"] == "jdupont.bsky.social"


THREAD = [
    bsky("root", DUPONT, "Bridge closed for repairs until Friday", 60),
    bsky("mid", "did:plc:bob", "Which bridge? The old one?", 50,
         reply_to=f"bluesky:at://{DUPONT}/app.bsky.feed.post/root"),
    bsky("leaf", DUPONT, "Yes the old stone bridge", 40,
         reply_to="bluesky:at://did:plc:bob/app.bsky.feed.post/mid"),
    bsky("r2", "did:plc:carol", "Thanks, taking the ferry then", 30,
         reply_to=f"bluesky:at://{DUPONT}/app.bsky.feed.post/leaf"),
    bsky("q", "did:plc:dan", "Finally some repairs", 20,
         quote_of=f"bluesky:at://{DUPONT}/app.bsky.feed.post/leaf"),
    post("noise", "eve", "A different bridge story from elsewhere", 5),
]
LEAF = f"bluesky:at://{DUPONT}/app.bsky.feed.post/leaf"


async def test_thread_route_and_explain_this_post() -> None:
    async with serve_app(THREAD) as api:
        await _people_api(api)
        h = Api.auth(api.key("k"))
        resp = await api.client.get(f"/v1/posts/{LEAF}/thread", headers=h)
        assert resp.status_code == 200, resp.text
        th = resp.json()
        assert [p["text"][:6] for p in th["ancestors"]] == ["Bridge", "Which "]
        assert [p["author"] for p in th["replies"]] == ["did:plc:carol"]
        assert [p["author"] for p in th["quotes"]] == ["did:plc:dan"]
        assert th["post"]["replies"] == 1 and th["post"]["quotes"] == 1
        by_url = await api.client.get(
            "/v1/posts/https://bsky.app/profile/jdupont.bsky.social/post/leaf/thread", headers=h)
        assert by_url.json()["post"]["id"] == LEAF
        gone = await api.client.get("/v1/posts/jsonl:nope/thread", headers=h)
        assert gone.status_code == 404
        chat = await api.client.post("/v1/chat/completions", headers=h, json={"messages": [
            {"role": "user",
             "content": "Explain this post: https://bsky.app/profile/jdupont.bsky.social/post/leaf"}
        ]})
        assert chat.status_code == 200
        prompt = "\n".join(m.content for m in api.llm.last_messages)
        for text in ("Bridge closed", "Which bridge", "old stone bridge", "taking the ferry",
                     "Finally some repairs"):
            assert text in prompt
        assert "A different bridge story" not in prompt


def test_cli_thread_authors_and_sort(store_backend: str) -> None:
    asyncio.run(_fill_cli())
    runner = CliRunner()
    out = runner.invoke(main, ["thread", LEAF, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)["ancestors"]) == 2
    text = runner.invoke(main, ["thread", LEAF], catch_exceptions=False).output
    assert "parent @jdupont.bsky.social" in text and "reply @did:plc:carol" in text
    missing = runner.invoke(main, ["thread", "jsonl:none"])
    assert missing.exit_code == 1 and "no stored post" in missing.output
    found = runner.invoke(main, ["authors", "dupont", "--json"], catch_exceptions=False)
    assert [a["id"] for a in json.loads(found.output)] == [DUPONT]
    top = runner.invoke(main, ["search", "bridge", "--sort", "top", "--json"],
                        catch_exceptions=False)
    assert json.loads(top.output)[0]["likes"] == 9


async def _fill_cli() -> None:
    from service_helpers import make_runtime

    runtime = make_runtime()
    try:
        await add_posts(runtime, [*THREAD[:5], post("liked", "fan", "bridge fans unite", 1,
                                                     likes=9)])
        runtime.store.apply("s", [Identity(DUPONT, "jdupont.bsky.social", "Jean Dupont")],
                            "c")
    finally:
        runtime.close()


# --- the identity lookup, against recorded responses on loopback ----------------------

#: app.bsky.actor.getProfiles as the public AppView answers (ProfileViewDetailed, trimmed
#: to the fields of its lexicon that we read and a few we ignore).
PROFILES = {"profiles": [
    {"did": DUPONT, "handle": "jdupont.bsky.social", "displayName": "Jean Dupont",
     "avatar": "https://cdn.bsky.app/img/avatar/plain/x/y@jpeg", "followersCount": 12,
     "followsCount": 3, "postsCount": 40, "indexedAt": "2026-01-02T10:00:00.000Z",
     "createdAt": "2024-05-01T09:00:00.000Z", "labels": []},
    {"did": "did:plc:broken", "handle": "handle.invalid", "displayName": ""},
]}


def test_identity_lookup_batches_caches_and_resolves(store: Store) -> None:
    dids = [DUPONT, "did:plc:broken", *(f"did:plc:x{i:02d}" for i in range(30))]
    store.apply("s", [Upsert(bsky(f"r{i}", d, "hello", 5 + i)) for i, d in enumerate(dids)],
                "c")
    statuses: list[int] = [429, 200, 200]

    def route(seen: Seen, reply: Reply) -> None:
        status = statuses.pop(0) if statuses else 200
        if status == 429:
            reply.send(429, b"{}", {"Retry-After": "1"})
            return
        body = {"profiles": [p for p in PROFILES["profiles"] if p["did"] in seen.query["actors"]]}
        reply.send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    with HttpReplayServer({PROFILES_PATH: route}) as server:
        lookup = IdentityLookup(store, server.url(""), rate=50)

        async def rounds() -> list[int]:
            out = [(await lookup.resolve_once()).asked]  # refused: nothing marked
            out.append((await lookup.resolve_once()).asked)
            out.append((await lookup.resolve_once()).asked)  # the cache: nothing left
            await lookup.aclose()
            return out

        asked = asyncio.run(rounds())
    assert asked == [0, 32, 0]
    batches = [len(s.query["actors"]) for s in server.requests_to(PROFILES_PATH)]
    assert batches == [25, 25, 7]
    got = store.get_post(f"bluesky:at://{DUPONT}/app.bsky.feed.post/r0")
    assert got is not None and got.author == "jdupont.bsky.social"
    broken = store.get_author("did:plc:broken")
    assert broken is not None and broken.handle == "did:plc:broken"


# --- Jetstream likes and reposts, on recorded traffic ----------------------------------


@pytest.mark.shared
async def test_recorded_likes_and_reposts_count_once_across_a_reconnect(
    tmp_path: Path,
) -> None:
    from conftest import shared_data
    from replay_servers import open_stream, take_batches, websocket_replay
    from townsquare.sources.jetstream import JetstreamSource

    path = shared_data("jetstream") / "internal_corpus_testdata_expected_v1.jsonl"
    lines = sorted(path.read_text(encoding="utf-8").splitlines(),
                   key=lambda line: json.loads(line)["time_us"])
    times = [json.loads(line)["time_us"] for line in lines]
    expected: dict[str, list[int]] = {}
    for m in map(json.loads, lines):
        commit = m.get("commit") or {}
        kind = commit.get("collection", "")
        if kind.endswith((".like", ".repost")) and commit.get("operation") == "create":
            counts = expected.setdefault("bluesky:" + commit["record"]["subject"]["uri"], [0, 0])
            counts[0 if kind.endswith(".like") else 1] += 1
    assert sum(sum(c) for c in expected.values()) == 120  # 105 likes, 15 reposts
    store = open_store(str(tmp_path / "s.db"), tmp_path)
    # The liked posts are older than the window: stand-ins under their ids.
    store.apply("seed", [Upsert(Post(id=pid, source="bluesky", author="x", text="liked",
                                     created_at=NOW)) for pid in expected], None)
    cut = 80
    done = asyncio.Event()

    async def replay(ws: Any, n: int) -> None:
        query = ws.request.path if ws.request else ""
        assert "wantedCollections=app.bsky.feed.like" in query
        cursor = int(query.split("cursor=")[1].split("&")[0]) if "cursor=" in query else None
        if n == 0:
            for line in lines[:cut]:
                await ws.send(line)
            await asyncio.sleep(0.05)
            ws.transport.abort()
            return
        for line, t in zip(lines, times, strict=True):
            if cursor is None or t >= cursor:
                await ws.send(line)
        done.set()
        await ws.wait_closed()

    async with websocket_replay(replay) as server:
        source = JetstreamSource(server.url("/subscribe"), batch_wait=0.01,
                                 reconnect_base=0.01, reconnect_cap=0.02)
        async with open_stream(source) as stream:
            batches = await take_batches(
                stream, lambda got: done.is_set() and got[-1].cursor == str(max(times)))
    for batch in batches:
        store.apply("jetstream", batch.events, batch.cursor)
    assert source.reconnects == 1
    for pid, (likes, reposts) in expected.items():
        got = store.get_post(pid)
        assert got is not None and (got.likes or 0, got.reposts or 0) == (likes, reposts), pid
    store.close()


@pytest.mark.shared
def test_mastodon_counts_are_kept_and_a_status_update_refreshes_them(tmp_path: Path) -> None:
    from conftest import shared_data, sse_events
    from townsquare.sources._mastodon_parse import MastodonParser

    text = (shared_data("mastodon") / "mastodon_documentation_examples.sse").read_text(
        encoding="utf-8")
    parser = MastodonParser("mastodon.social")
    store = open_store(str(tmp_path / "m.db"), tmp_path)
    last: tuple[str, dict[str, Any]] | None = None
    for ev in sse_events(text):
        if ev.event not in ("update", "status.update"):
            continue
        event = parser.parse(ev.event, ev.data)
        status = json.loads(ev.data)
        assert isinstance(event, Upsert)
        post_ = event.post
        assert (post_.likes, post_.reposts, post_.replies) == (
            status["favourites_count"], status["reblogs_count"], status["replies_count"])
        store.apply("m", [event], None)
        last = (ev.event, status)
    assert last is not None
    # The same status as a later status.update with new counts (and the same text).
    status = {**last[1], "favourites_count": 12, "reblogs_count": 3, "replies_count": 2}
    event = parser.parse("status.update", json.dumps(status))
    assert isinstance(event, Upsert)
    store.apply("m", [event], None)
    got = store.get_post(event.post.id)
    assert got is not None and (got.likes, got.reposts, got.replies) == (12, 3, 2)
    store.close()
