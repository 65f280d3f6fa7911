"""The SQLite store's lexical index: kept in step with the posts, and its own BM25
(statistics read from FTS5's shadow tables, scores ranked right)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from factories import make_post
from townsquare.model import Delete, Upsert
from townsquare.store import SearchFilters
from townsquare.store.sqlite import SQLiteStore
from townsquare.store.sqlite.bm25 import TermStats, varints

NOW = datetime.now(UTC)


_post = partial(make_post, author="someone", now=NOW, url=None)


def test_varints_decode_sqlite_encoding() -> None:
    assert varints(bytes.fromhex("8C9A40")) == [200_000]
    assert varints(bytes.fromhex("00 7F 8100")) == [0, 127, 128]
    assert varints(bytes([0xFF] * 8 + [0x01])) == [(2**56 - 1) << 8 | 1]


def test_lengths_and_average_come_from_the_fts_shadow_tables(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    posts = [_post(0, text="one two three", when=100),
             _post(1, text="one two three four five six seven", when=99)]
    store.apply("t", [Upsert(p) for p in posts], None)
    conn = store.db.reader()
    stats = TermStats()
    lengths = stats.lengths(conn, [1, 2])
    # text tokens + the author (one token) + no hashtags
    assert lengths == {1: 4, 2: 8}
    assert stats.average_length(conn) == 6.0
    store.close()


def test_rare_words_and_short_posts_rank_higher(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    posts = [_post(i, text=f"the weather is nice number{i}", when=100 - i) for i in range(40)]
    posts += [
        _post(50, text="weather eclipse", when=50),  # the rare word, short post
        _post(51, text="weather report: an eclipse is expected over the valley this weekend, "
                       "clear skies and mild temperatures across the region",
              when=49),  # same words, long
        _post(52, text="weather weather weather", when=48),  # only the common word
    ]
    store.apply("t", [Upsert(p) for p in posts], None)
    found = store.lexical("weather eclipse", SearchFilters(), limit=10)
    id_of = dict(store.db.reader().execute("SELECT key, id FROM posts").fetchall())
    score = {id_of[c.key]: c.score for c in found}
    # Both words beat one; the short post beats the long one; the rare word beats the common.
    assert score["jsonl:50"] > score["jsonl:51"] > score["jsonl:52"]
    assert id_of[found[0].key] == "jsonl:50"
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    store.close()


def test_the_index_stays_in_step_through_inserts_edits_and_deletes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    a, b = _post(1, text="first words", when=99), _post(2, text="other words", when=98)
    edited = dataclasses.replace(a, text="edited words")
    store.apply("t", [Upsert(a), Upsert(b), Upsert(edited), Upsert(a)], None)  # one batch
    store.apply("t", [Upsert(edited), Delete(b.id), Upsert(_post(3, text="third words", when=97))],
                None)
    store.apply("t", [Upsert(edited)], None)  # an unchanged replay
    conn = store.db.writer
    conn.execute("INSERT INTO posts_fts(posts_fts, rank) VALUES ('integrity-check', 1)")
    found = {c.key for c in store.lexical("words", SearchFilters(), 10)}
    id_of = dict(store.db.reader().execute("SELECT key, id FROM posts").fetchall())
    assert {id_of[k] for k in found} == {"jsonl:1", "jsonl:3"}
    assert [id_of[c.key] for c in store.lexical("edited", SearchFilters(), 10)] == ["jsonl:1"]
    assert store.lexical("first", SearchFilters(), 10) == []
    store.close()
