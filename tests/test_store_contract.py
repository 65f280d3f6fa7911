"""The Store contract, run against every engine: SQLite, then PostgreSQL.

One behaviour, two implementations: whatever a test here asserts holds for
both, so the layers above never need to know which store they talk to.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from factories import make_post
from townsquare.model import Delete, Identity, Upsert, quarantine
from townsquare.store import SearchFilters, Store, open_store

NOW = datetime.now(UTC).replace(microsecond=0)


post = partial(make_post, author="alice", lang="en", now=NOW, url=None)


POSTS = [
    post("1", text="The train strike in Paris is over #greve", when=timedelta(hours=30),
         url="https://ex.org/1", author_name="Alice A.", reply_to="jsonl:0"),
    post("2", text="Grève des trains: l'école est fermée à Lyon", when=timedelta(hours=2),
         author="bob", lang="fr"),
    post("3", text="Train strike continues, stations empty @bob", when=timedelta(minutes=10),
         author="carol", author_id="did:plc:carol"),
    post("4", text="Lovely weather for a picnic today #sun #picnic", when=timedelta(minutes=5),
         author="dave", source="rss", lang=None, quote_of="jsonl:1"),
]


def unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url, tmp_path)
    yield s
    s.close()


@pytest.fixture
def filled(store: Store) -> Store:
    store.apply("jsonl:test", [Upsert(p) for p in POSTS], "cursor-1",
                {p.id: unit(i) for i, p in enumerate(POSTS)})
    return store


def ids_of(store: Store, cands: list) -> list[str]:  # type: ignore[type-arg]
    posts = store.posts_by_keys([c.key for c in cands])
    return [posts[c.key].id for c in cands]


def test_apply_saves_posts_and_cursor_and_replay_is_a_no_op(store: Store) -> None:
    events = [Upsert(p) for p in POSTS]
    first = store.apply("jsonl:a", events, "10")
    assert (first.upserted, first.deleted, first.quarantined) == (4, 0, 0)
    assert store.get_cursor("jsonl:a") == "10"
    again = store.apply("jsonl:a", events, "20")
    assert again.upserted == 0  # unchanged replay: nothing rewritten
    assert store.get_cursor("jsonl:a") == "20"
    assert store.cursors() == {"jsonl:a": "20"}
    assert store.get_cursor("nope") is None
    assert store.stats()["posts"] == 4
    # The same posts through a second stream are still one row each.
    store.apply("jsonl:b", events[::-1], None)
    stats = store.stats()
    assert stats["posts"] == 4
    assert stats["sources"]["jsonl"]["posts"] == 3 and stats["sources"]["rss"]["posts"] == 1


def test_a_post_reads_back_with_every_field(filled: Store) -> None:
    got = filled.get_post("jsonl:1")
    assert got is not None
    want = POSTS[0]
    for name in ("id", "source", "author", "author_name", "author_id", "text", "url", "lang",
                 "hashtags", "mentions", "reply_to", "quote_of"):
        assert getattr(got, name) == getattr(want, name), name
    assert abs((got.created_at - want.created_at).total_seconds()) < 0.001
    assert got.indexed_at is not None and got.created_at.tzinfo is not None
    assert filled.get_post("jsonl:3").author_id == "did:plc:carol"  # type: ignore[union-attr]
    assert filled.get_post("rss:4").mentions == []  # type: ignore[union-attr]
    assert filled.get_post("jsonl:3").mentions == ["bob"]  # type: ignore[union-attr]
    assert filled.get_post("missing") is None


def test_an_edit_is_one_upsert_and_reindexes(filled: Store) -> None:
    edited = dataclasses.replace(POSTS[2], text="Metro closed, buses replace it")
    assert filled.apply("s", [Upsert(edited)], None).upserted == 1
    assert filled.get_post("jsonl:3").text == edited.text  # type: ignore[union-attr]
    assert "jsonl:3" not in ids_of(filled, filled.lexical("stations", SearchFilters(), 10))
    assert ids_of(filled, filled.lexical("buses", SearchFilters(), 10)) == ["jsonl:3"]
    # Moving a post in time (a source correcting created_at) keeps one row.
    moved = dataclasses.replace(edited, created_at=NOW - timedelta(days=3))
    assert filled.apply("s", [Upsert(moved)], None).upserted == 1
    assert filled.stats()["posts"] == 4
    assert filled.get_post("jsonl:3").created_at == moved.created_at  # type: ignore[union-attr]
    assert "jsonl:3" not in ids_of(filled, filled.recent(SearchFilters(since=NOW - timedelta(1)),
                                                         10))


def test_within_one_batch_the_last_version_wins_and_order_is_kept(store: Store) -> None:
    a = post("x", text="first words", when=timedelta(minutes=1))
    b = dataclasses.replace(a, text="second words")
    res = store.apply("s", [Upsert(a), Upsert(b)], None)
    assert res.upserted >= 1
    assert store.get_post("jsonl:x").text == "second words"  # type: ignore[union-attr]
    store.apply("s", [Upsert(a), Delete("jsonl:x")], None)
    assert store.get_post("jsonl:x") is None
    store.apply("s", [Delete("jsonl:x"), Upsert(a)], None)
    assert store.get_post("jsonl:x").text == "first words"  # type: ignore[union-attr]


def test_staged_is_called_at_most_once_and_a_failure_after_it_keeps_nothing(
    store: Store,
) -> None:
    calls: list[int] = []
    a, b, c = (post(x, text=f"harbour {x} news", when=timedelta(minutes=1)) for x in "abc")
    res = store.apply("s", [Upsert(a), Delete("jsonl:zz"), Upsert(b), Upsert(c)], "1",
                      staged=lambda: calls.append(1))
    assert res.upserted == 3 and len(calls) <= 1
    # Every run of the batch is searchable, the last one too (it is indexed after staged).
    assert sorted(ids_of(store, store.lexical("harbour", SearchFilters(), 10))) == [
        "jsonl:a", "jsonl:b", "jsonl:c"]

    def fail() -> None:
        raise RuntimeError("writer stopped")

    d = post("d", text="harbour d news", when=timedelta(minutes=1))
    with pytest.raises(RuntimeError):
        store.apply("s", [Upsert(d)], "2", staged=fail)
    assert store.get_post("jsonl:d") is None and store.get_cursor("s") == "1"
    assert len(ids_of(store, store.lexical("harbour", SearchFilters(), 10))) == 3
    # The next batch is written and found as usual, time filters included.
    assert store.apply("s", [Upsert(d)], "3").upserted == 1
    recent = SearchFilters(since=NOW - timedelta(hours=1))
    assert "jsonl:d" in ids_of(store, store.lexical("harbour", recent, 10))


def test_delete_removes_post_index_and_vector(filled: Store) -> None:
    res = filled.apply("s", [Delete("jsonl:3"), Delete("jsonl:never-seen")], None)
    assert res.deleted == 1
    assert filled.get_post("jsonl:3") is None
    assert "jsonl:3" not in ids_of(filled, filled.lexical("strike", SearchFilters(), 10))
    assert filled.stats()["posts"] == 3 and filled.stats()["vectors"] == 3
    keys = set(filled.vectors_since(0).keys.tolist())
    assert len(keys) == 3


def test_identity_renames_the_author_everywhere(filled: Store) -> None:
    res = filled.apply("s", [Identity(did="did:plc:carol", handle="caroline")], None)
    assert res.identities == 1
    assert filled.get_post("jsonl:3").author == "caroline"  # type: ignore[union-attr]
    found = filled.recent(SearchFilters(authors=["@Caroline"]), 10)
    assert ids_of(filled, found) == ["jsonl:3"]
    assert ids_of(filled, filled.recent(SearchFilters(authors=["did:plc:carol"]), 10)) == [
        "jsonl:3"
    ]


def test_filters(filled: Store) -> None:
    def recent(**kw: object) -> list[str]:
        return ids_of(filled, filled.recent(SearchFilters(**kw), 10))  # type: ignore[arg-type]

    assert recent() == ["rss:4", "jsonl:3", "jsonl:2", "jsonl:1"]
    assert recent(since=NOW - timedelta(hours=1)) == ["rss:4", "jsonl:3"]
    assert recent(until=NOW - timedelta(hours=1)) == ["jsonl:2", "jsonl:1"]
    assert recent(since=NOW - timedelta(hours=3), until=NOW - timedelta(hours=1)) == ["jsonl:2"]
    assert recent(authors=["@ALICE", "bob"]) == ["jsonl:2", "jsonl:1"]
    assert recent(exclude_authors=["alice", "@dave"]) == ["jsonl:3", "jsonl:2"]
    assert recent(sources=["rss"]) == ["rss:4"]
    assert recent(langs=["fr"]) == ["jsonl:2"]
    assert recent(hashtags=["picnic"]) == ["rss:4"]
    assert recent(hashtags=["#sun", "picnic"]) == ["rss:4"]  # every tag must be there
    assert recent(hashtags=["sun", "greve"]) == []
    assert recent(hashtags=["pic"]) == []  # whole tags only
    lexical = filled.lexical("train", SearchFilters(langs=["en"], since=NOW - timedelta(1)), 10)
    assert ids_of(filled, lexical) == ["jsonl:3"]
    # posts_by_keys applies the filters too (hydration after dense search).
    keys = [c.key for c in filled.recent(SearchFilters(), 10)]
    kept = filled.posts_by_keys(keys, SearchFilters(sources=["jsonl"], langs=["en"]))
    assert sorted(p.id for p in kept.values()) == ["jsonl:1", "jsonl:3"]
    assert filled.posts_by_keys([]) == {}


def test_recent_scores_are_epoch_seconds(filled: Store) -> None:
    cands = filled.recent(SearchFilters(), 2)
    assert len(cands) == 2
    assert abs(cands[0].score - (NOW - timedelta(minutes=5)).timestamp()) < 0.01


def test_lexical_or_semantics_stemming_and_accents(filled: Store) -> None:
    def lex(q: str, **kw: object) -> list[str]:
        return ids_of(filled, filled.lexical(q, SearchFilters(**kw), 10))  # type: ignore[arg-type]

    both = lex("train strike")
    assert set(both) == {"jsonl:1", "jsonl:2", "jsonl:3"}
    assert both[-1] == "jsonl:2"  # one word of two ranks below both words
    assert "jsonl:3" in lex("trains")  # stemming
    assert lex("ecole") == ["jsonl:2"]  # accents fold: école
    assert set(lex("GRÈVE")) == {"jsonl:1", "jsonl:2"}  # grève and #greve
    assert lex("fermée") == ["jsonl:2"]
    assert lex("carol") == ["jsonl:3"]  # the author is indexed
    assert lex("picnic")[0] == "rss:4"
    assert lex("what are people saying about the weather") == ["rss:4"]  # stop words dropped
    assert lex("") == [] and lex("   ") == [] and lex("?!") == []
    for nasty in ['"', "NOT", "train OR", "*", "text:train", 'NEAR("a" "b")', "(", "^", "a & b",
                  "!x", "'", "\\", "train:*", "x <-> y", "%s", "{0}", "\x00"]:
        assert isinstance(filled.lexical(nasty, SearchFilters(), 5), list), nasty
    assert lex("train", langs=["fr"]) == ["jsonl:2"]


def test_lexical_honours_limit_and_scores_descend(filled: Store) -> None:
    cands = filled.lexical("train strike greve", SearchFilters(), 2)
    assert len(cands) == 2
    assert cands[0].score >= cands[1].score > 0


def test_iter_posts_in_key_order_resumable(filled: Store) -> None:
    rows = list(filled.iter_posts(batch=3))
    keys = [k for k, _ in rows]
    assert keys == sorted(keys) and len(keys) == 4
    assert [p.id for _, p in rows] == [p.id for p in POSTS]
    assert [p.id for _, p in filled.iter_posts(after_key=keys[1])] == ["jsonl:3", "rss:4"]
    recent = [p.id for _, p in filled.iter_posts(since=NOW - timedelta(hours=1))]
    assert recent == ["jsonl:3", "rss:4"]


def test_vectors_since_follows_every_write(filled: Store) -> None:
    first = filled.vectors_since(0)
    assert len(first.keys) == 4 and first.vectors.dtype == np.int8
    assert first.vectors.shape == (4, 16)
    assert list(first.seqs) == sorted(first.seqs)
    assert set(first.keys.tolist()) == {k for k, _ in filled.iter_posts()}
    by_key = dict(zip(first.keys.tolist(), first.created_ms.tolist(), strict=True))
    k1 = next(k for k, p in filled.iter_posts() if p.id == "jsonl:1")
    assert abs(by_key[k1] - POSTS[0].created_at.timestamp() * 1000) < 2
    # dequantized rows approximate the unit vectors written
    approx = first.vectors[0].astype(np.float32) * first.scales[0]
    assert abs(float(np.linalg.norm(approx)) - 1.0) < 0.05
    top = int(first.seqs.max())
    assert len(filled.vectors_since(top).keys) == 0
    assert len(filled.vectors_since(0, limit=2).keys) == 2
    # an edit with a new vector gets a newer sequence number; unknown ids are ignored
    edited = dataclasses.replace(POSTS[1], text="Grève terminée")
    filled.apply("s", [Upsert(edited)], None, {edited.id: unit(99), "jsonl:nope": unit(1)})
    later = filled.vectors_since(top)
    assert len(later.keys) == 1 and int(later.seqs[0]) > top


def test_embedder_name_is_recorded_and_never_mixed(store: Store) -> None:
    assert store.embedder_name() is None
    store.set_embedder_name("hash", 16)  # type: ignore[attr-defined]
    store.set_embedder_name("hash", 16)  # type: ignore[attr-defined]
    assert store.embedder_name() == "hash/16"
    with pytest.raises(ValueError, match="embedder"):
        store.set_embedder_name("minilm", 384)  # type: ignore[attr-defined]


def test_quarantine_keeps_raw_bytes_and_reason(store: Store) -> None:
    res = store.apply("s", [quarantine("jsonl", b"\xff\x00not json", "invalid JSON: x"),
                            quarantine("rss", "<bad/>", "no items")], None)
    assert res.quarantined == 2
    records = store.quarantined(10)
    assert [r.reason for r in records] == ["no items", "invalid JSON: x"]  # newest first
    assert records[1].raw == b"\xff\x00not json" and records[1].source == "jsonl"
    assert records[0].at.tzinfo is not None
    assert len(store.quarantined(1)) == 1
    assert store.stats()["quarantined"] == 2


def test_api_keys(store: Store) -> None:
    a = store.create_api_key("alice", "free", "ts_aaaa", "h1")
    b = store.create_api_key("bob", "premium", "ts_bbbb", "h2")
    assert a.id != b.id and a.revoked_at is None and a.created_at.tzinfo is not None
    assert [k.name for k in store.api_keys_by_prefix("ts_bbbb")] == ["bob"]
    assert store.api_keys_by_prefix("ts_none") == []
    assert [k.name for k in store.list_api_keys()] == ["alice", "bob"]
    assert store.revoke_api_key("alice") is True
    assert store.revoke_api_key("alice") is False  # already revoked
    assert store.revoke_api_key("ts_bbbb") is True  # by prefix
    assert all(k.revoked_at is not None for k in store.list_api_keys())


def test_usage_report_and_tokens_used(store: Store) -> None:
    k = store.create_api_key("alice", "free", "ts_aaaa", "h1")
    nov = datetime(2025, 11, 15, tzinfo=UTC)
    dec = datetime(2025, 12, 2, tzinfo=UTC)
    store.record_usage(k.id, "local", 10, 5, "/v1/chat/completions", at=nov)
    store.record_usage(k.id, "local", 1, 2, "/v1/chat/completions", at=dec)
    store.record_usage(k.id, "openai", 7, 0, "/v1/chat/completions", at=dec)
    store.record_usage(None, "local", 3, 3, "/v1/chat/completions", at=dec)
    rows = store.usage_report()
    assert [(r.key_id, r.key_name, r.model, r.requests, r.prompt_tokens, r.completion_tokens)
            for r in rows] == [
        (None, None, "local", 1, 3, 3),
        (k.id, "alice", "local", 2, 11, 7),
        (k.id, "alice", "openai", 1, 7, 0),
    ]
    dec_rows = store.usage_report(key_id=k.id, month="2025-12")
    assert [(r.model, r.requests, r.prompt_tokens) for r in dec_rows] == [
        ("local", 1, 1), ("openai", 1, 7)]
    assert store.usage_report(month="2025-10") == []
    assert store.tokens_used(k.id, datetime(2025, 12, 1, tzinfo=UTC)) == 10
    assert store.tokens_used(k.id, datetime(2025, 11, 1, tzinfo=UTC)) == 25
    store.record_usage(k.id, "local", 4, 4, "/v1/chat/completions")  # now
    assert store.tokens_used(k.id, datetime.now(UTC) - timedelta(minutes=1)) == 8


def test_conversations_belong_to_their_owner(store: Store) -> None:
    mine = store.create_conversation("alice", "fun")
    anon = store.create_conversation(None, "regular")
    store.add_message(mine.id, "user", "hi", {"citations": [1, 2]})
    store.add_message(mine.id, "assistant", "hello [1]", {"at": NOW})
    got = store.get_conversation(mine.id, "alice")
    assert got is not None and got.mode == "fun" and got.owner == "alice"
    assert [(m.role, m.content) for m in got.messages] == [("user", "hi"),
                                                           ("assistant", "hello [1]")]
    assert got.messages[0].meta == {"citations": [1, 2]}
    assert isinstance(got.messages[1].meta["at"], str)
    assert store.get_conversation(mine.id, "mallory") is None
    assert store.get_conversation(mine.id, None) is None
    assert store.get_conversation(anon.id, None) is not None
    assert store.get_conversation(anon.id, "alice") is None
    assert store.get_conversation("conv_missing", "alice") is None


def test_conversations_list_rename_delete_only_for_their_owner(store: Store) -> None:
    first = store.create_conversation("alice", "regular")
    store.add_message(first.id, "user", "what about the strike?")
    store.add_message(first.id, "assistant", "it is over [1]")
    second = store.create_conversation("alice", "fun")
    theirs = store.create_conversation("bob", "regular")
    store.add_message(theirs.id, "user", "bob's question")
    time.sleep(0.01)  # activity is kept to the millisecond
    store.add_message(second.id, "user", "and the weather?")  # the newest activity

    listed = store.list_conversations("alice")
    assert [c.id for c in listed] == [second.id, first.id]
    assert listed[1].first_question == "what about the strike?" and listed[1].messages == 2
    assert listed[1].title is None and listed[0].mode == "fun"
    assert listed[1].updated_at >= listed[1].created_at
    assert [c.id for c in store.list_conversations("bob")] == [theirs.id]
    assert store.list_conversations("mallory") == []
    assert [c.id for c in store.list_conversations("alice", limit=1)] == [second.id]
    older = store.list_conversations("alice", before=listed[0].updated_at)
    assert [c.id for c in older] == [first.id]

    assert store.rename_conversation(first.id, "alice", "Strike")
    assert not store.rename_conversation(first.id, "bob", "mine now")
    assert not store.rename_conversation("conv_missing", "alice", "x")
    got = store.get_conversation(first.id, "alice")
    assert got is not None and got.title == "Strike"
    assert store.list_conversations("alice")[1].title == "Strike"
    assert store.rename_conversation(first.id, "alice", None)
    assert store.list_conversations("alice")[1].title is None

    assert not store.delete_conversation(first.id, "bob")
    assert store.get_conversation(first.id, "alice") is not None
    assert store.delete_conversation(first.id, "alice")
    assert store.get_conversation(first.id, "alice") is None
    assert not store.delete_conversation(first.id, "alice")
    assert [c.id for c in store.list_conversations("alice")] == [second.id]


def test_last_key_follows_new_rows(store: Store) -> None:
    assert store.last_key() == 0
    store.apply("s", [Upsert(post("a", text="one", when=timedelta(minutes=1)))], None)
    first = store.last_key()
    assert first > 0
    store.apply("s", [Upsert(post("b", text="two", when=timedelta(minutes=2)))], None)
    assert store.last_key() > first
    assert [p.id for _, p in store.iter_posts(after_key=first)] == ["jsonl:b"]


def test_stats_shape(filled: Store) -> None:
    s = filled.stats()
    assert s["posts"] == 4 and s["vectors"] == 4 and s["quarantined"] == 0
    assert {"store", "sources", "embedder", "file_bytes"} <= set(s)
    assert s["file_bytes"] > 0
    assert s["sources"]["jsonl"]["newest_created_at"].tzinfo is not None


def test_watches_belong_to_their_owner_and_claims_are_won_once(store: Store) -> None:
    from townsquare.store import StoredWatch

    made = datetime(2026, 11, 3, 12, 0, 0, 123000, tzinfo=UTC)
    spec = {"query": "grève à Lyon", "langs": ["fr"], "min_terms": 2, "webhook_url": None}
    first = StoredWatch(id="w1", owner=7, created_at=made, secret="whsec_a", spec=spec)
    assert store.add_watch(first)
    assert not store.add_watch(dataclasses.replace(first, owner=8))  # the id is taken
    store.add_watch(StoredWatch(id="w2", owner=8, created_at=made + timedelta(seconds=1),
                                secret="whsec_b", spec={"query": "x"}))
    assert store.get_watch("w1", 7) == first  # the spec comes back whole, the time exact
    assert store.get_watch("w1", 8) is None
    assert [w.id for w in store.watches()] == ["w1", "w2"]
    assert [w.id for w in store.watches(8)] == ["w2"]
    assert not store.set_watch_secret("w1", 8, "whsec_stolen")
    assert store.set_watch_secret("w1", 7, "whsec_new")
    assert store.get_watch("w1", 7).secret == "whsec_new"  # type: ignore[union-attr]

    pairs = [("w1", "post:a"), ("w1", "story:s"), ("w2", "post:a")]
    assert store.claim_watch_items(pairs) == pairs
    assert store.claim_watch_items([("w1", "post:a"), ("w1", "post:b")]) == [("w1", "post:b")]
    assert store.watch_claims(["w1"], "story:") == {("w1", "story:s")}
    assert store.watch_claims(["w1", "w2"]) == {*pairs, ("w1", "post:b")}
    old = datetime.now(UTC) - timedelta(days=30)
    store.claim_watch_items([("w2", "post:old")], at=old)
    assert store.forget_watch_claims(old + timedelta(days=1)) == 1

    assert not store.delete_watch("w1", 8)
    assert store.delete_watch("w1", 7)  # its claims go with it
    assert store.get_watch("w1", 7) is None and store.watch_claims(["w1"]) == set()
    assert store.watch_claims(["w2"]) == {("w2", "post:a")}


def test_capabilities_are_declared(store: Store) -> None:
    assert store.drops_partitions == (store.kind == "postgresql")
    if not store.drops_partitions:
        with pytest.raises(NotImplementedError):
            store.drop_partitions_before(NOW)
    store.set_embedder_name("hash", 16)
    store.set_embedder_name("hash", 16)  # the same one again is fine
    with pytest.raises(ValueError, match="hash/16"):
        store.set_embedder_name("minilm", 384)
