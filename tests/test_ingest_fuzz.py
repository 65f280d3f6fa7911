"""Fuzzing every parser with generated good and malformed records (Hypothesis).

Each example is a batch mixing well-formed records (odd but legal values
included: any Unicode, integer ids, junk in optional fields, dates far in
the future) with malformed ones (wrong types in every field, absurd dates,
lone surrogates, invalid JSON, random bytes, nesting 100,000 deep). Each
batch goes through the source's real parser and the pipeline's admission
(:class:`~townsquare.ingest.Limits`), as ``Ingestor.commit`` runs them, and
the test asserts: nothing raises, every good record comes out as a post
(zero lost, and within its bounds), every malformed one comes out as a
quarantine record with a reason. Two more tests commit the mix into a real
SQLite store, one through ``JsonlSource`` from a file.

The runs are derandomized (the same cases every time, so CI is stable); set
``TOWNSQUARE_FUZZ_EXAMPLES`` to run more, with fresh random cases. Run with
``-s`` to see the number of records each source was fed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from townsquare.bus.codec import DecodeError, decode, encode
from townsquare.ingest import Ingestor, IngestStats, Limits
from townsquare.model import Batch, Event, Post, Quarantine, Upsert, quarantine
from townsquare.sources._feeds import FeedError, parse_feed
from townsquare.sources._mastodon_parse import MastodonParser
from townsquare.sources.jetstream import parse_message
from townsquare.sources.jsonl import JsonlSource, parse_line
from townsquare.store.sqlite import SQLiteStore

_MORE = int(os.environ.get("TOWNSQUARE_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=_MORE or examples, deadline=None, database=None, derandomize=not _MORE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example],
    )


#: Records fed, good ones, and good ones lost, per source (printed at the end).
FED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    rows = sorted({k.split(":")[0] for k in FED})
    print("\nfuzz records fed (good / malformed, good lost):")
    for src in rows:
        print(f"  {src:10} {FED[src + ':good'] + FED[src + ':bad']:>7,} "
              f"({FED[src + ':good']:,} / {FED[src + ':bad']:,}, lost {FED[src + ':lost']})")
    print(f"  {'total':10} {sum(v for k, v in FED.items() if not k.endswith('lost')):>7,}")


LIMITS = Limits()
NOW = datetime.now(UTC)

# --- values ------------------------------------------------------------------------

#: Text as JSON carries it: any Unicode scalar (Hypothesis leaves out surrogates).
text = st.text(max_size=80)
word = st.text(min_size=1, max_size=24)
#: What XML 1.0 can carry at all (no control characters but tab and newline).
xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\n"),
                   max_size=80)
JSONL_FIELDS = ("id", "author", "text", "created_at", "lang", "url", "author_name", "reply_to",
                "quote_of", "deleted")
good_times = st.datetimes(min_value=datetime(1991, 1, 1), max_value=datetime(2026, 11, 1),
                          timezones=st.just(UTC))
#: Up to 2999: later epoch seconds read as milliseconds, by design (see parse_time).
future_times = st.datetimes(min_value=datetime(2027, 1, 1), max_value=datetime(2999, 1, 1),
                            timezones=st.just(UTC))
ancient_times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1989, 12, 1),
                             timezones=st.just(UTC))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
#: Values that are no string: what a careless or hostile producer puts in string fields.
not_strings = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(json_values, max_size=3),
    st.dictionaries(text, json_values, max_size=3),
)
#: Times no reader accepts, or dates no post has.
bad_times = st.one_of(
    st.lists(json_values, max_size=3), st.dictionaries(text, json_values, max_size=2),
    st.booleans(), st.just("yesterday-ish"), st.text(alphabet="abcxyz:- ", min_size=1),
    st.floats(min_value=1e20, max_value=1e300), st.just(float("nan")),
    ancient_times.map(lambda d: d.isoformat()), st.just("9999-12-31T23:59:59-05:00"),
)
SURROGATE = "\\ud800"

# Every strategy used inside a composite is built once, here: Hypothesis validates
# a strategy object on first use, and one built per draw costs more than the test.
booleans = st.booleans()
how_when = st.integers(0, 3)
how_when_no_ms = st.integers(0, 2)
maybe_word = st.none() | word
an_author = word.filter(lambda a: a.lstrip("@"))
a_body = st.text(min_size=1, max_size=120)
a_big_int = st.integers(0, 2**62)
some_times = good_times | future_times
extra_keys = st.lists(text.filter(lambda k: k not in JSONL_FIELDS), max_size=2)
id_values_bad = st.none() | st.just("") | not_strings.filter(
    lambda v: not isinstance(v, int) or isinstance(v, bool))
missing_or_bad = st.none() | st.just("") | not_strings
not_ids = st.floats(allow_nan=False) | st.lists(json_values, min_size=1) | st.booleans()
garbage = st.binary(min_size=1, max_size=60).map(lambda b: "{" + b.hex())
not_objects = json_values.filter(lambda v: not isinstance(v, dict))
not_objects_or_strings = json_values.filter(lambda v: not isinstance(v, dict | str))
strange_records = st.dictionaries(text.filter(lambda k: k not in JSONL_FIELDS), json_values,
                                  max_size=4)
ancient_after_1971 = ancient_times.filter(lambda d: d.year >= 1971)
ancient_after_1900 = ancient_times.filter(lambda d: d.year > 1900)
bad_time_or_none = bad_times | st.none()
not_string_or_none = not_strings | st.none()
not_string_or_empty = not_strings | st.just("")
record_not_dict = not_strings | st.none() | text
unknown_ops = text.filter(lambda o: o not in ("create", "update", "delete"))
depths = st.sampled_from((5_000, 100_000))
html_parts = st.lists(st.sampled_from(["<p>", "</p>", "<br>", "<a href='x'>", "</a>", "&amp;",
                                       "<span class='invisible'>", "</span>"])
                      | text.map(escape), max_size=6)
account_urls = st.sampled_from(("https://m.example/@a", "not a url", ""))
bad_accounts = not_strings | st.just({"acct": 5}) | st.none()
non_events = st.one_of(st.just("{oops"), json_values.map(lambda v: dumps(v, True)).filter(
    lambda m: '"event"' not in m))
non_item_values = not_strings.filter(lambda v: not isinstance(v, dict))
maybe_text = st.none() | text
bus_sources = st.sampled_from(("jsonl", "bluesky", "rss", "mastodon"))
maybe_lang = st.none() | st.sampled_from(("en", "fr"))
bus_raws = st.none() | text | st.dictionaries(word, json_values, max_size=3)
bad_tags = st.dictionaries(text, json_values, min_size=1) | st.lists(not_strings, min_size=1)
not_version_1 = json_values.filter(lambda v: v != 1)
unknown_bus_ops = json_values.filter(
    lambda v: v not in ("upsert", "delete", "identity", "quarantine"))
small_binary = st.binary(max_size=60)
#: Optional fields of each format that get junk (a couple per record: enough to vary).
jetstream_junk = st.lists(st.sampled_from(("langs", "reply", "embed", "facets", "labels")),
                          max_size=2, unique=True)
mastodon_junk = st.lists(st.sampled_from(("spoiler_text", "language", "tags", "mentions",
                                          "in_reply_to_id", "quote", "reblog", "url")),
                         max_size=2, unique=True)
json_feed_junk = st.lists(st.sampled_from(("url", "authors", "author", "tags", "content_html",
                                           "language", "summary")), max_size=2, unique=True)


def when(moment: datetime, how: int) -> Any:
    """A time in one of the forms sources send: ISO with Z or offset, epoch s or ms."""
    if how == 0:
        return moment.isoformat().replace("+00:00", "Z")
    if how == 1:
        return moment.astimezone(UTC).isoformat()
    if how == 2:
        return int(moment.timestamp())
    return int(moment.timestamp() * 1000)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def dumps(obj: Any, ascii_only: bool) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only)


def with_surrogate(line: str, field: str) -> str:
    """``line`` with a lone surrogate escaped into the string value of ``field``."""
    marker = f'"{field}": "'
    at = line.find(marker)
    assert at >= 0, (field, line)
    at += len(marker)
    return line[:at] + SURROGATE + line[at:]


# --- checking what came out ------------------------------------------------------------


def settle(events: list[Event | None]) -> list[Event]:
    """What ``Ingestor.commit`` stores: the parser's events after admission."""
    return LIMITS.admit([e for e in events if e is not None])


def check(source: str, kinds: list[str], ids: list[str | None], events: list[Event],
          clamp: set[str] | None = None) -> None:
    """One event per record, in order: posts for good ones (with the expected id),
    quarantine records with a reason for malformed ones."""
    assert len(events) == len(kinds), (kinds, events)
    latest = datetime.now(UTC) + LIMITS.max_future_skew
    for kind, pid, ev in zip(kinds, ids, events, strict=True):
        FED[f"{source}:{kind}"] += 1
        if kind == "good":
            if not isinstance(ev, Upsert) or (pid is not None and ev.post.id != pid):
                FED[f"{source}:lost"] += 1
            assert isinstance(ev, Upsert), (pid, ev)
            assert pid is None or ev.post.id == pid
            post = ev.post
            assert LIMITS.min_post_date <= post.created_at <= latest
            assert len(post.text) <= LIMITS.max_post_chars
            assert isinstance(post.raw, str | None)
            if clamp is not None and post.id in clamp:
                assert abs(post.created_at - datetime.now(UTC)) < timedelta(minutes=1)
        else:
            assert isinstance(ev, Quarantine), (pid, ev)
            assert ev.reason.strip() and isinstance(ev.raw, bytes)


# --- JSONL ---------------------------------------------------------------------------


@st.composite
def jsonl_good(draw: st.DrawFn, n: int) -> tuple[str, str, bool]:
    """(line, expected post id, was its date in the future)."""
    pid: Any = f"{draw(word)}-{n}" if draw(booleans) else draw(a_big_int) * 1000 + n
    future = draw(booleans) and draw(booleans)
    record: dict[str, Any] = {
        "id": pid,
        "author": draw(an_author),
        "text": draw(a_body),
        "created_at": when(draw(future_times if future else good_times), draw(how_when)),
    }
    for key in ("lang", "url", "author_name", "reply_to", "quote_of"):
        if draw(booleans):
            record[key] = draw(maybe_word)
    for key in draw(extra_keys):
        record[key] = draw(json_values)  # unknown fields are ignored
    return dumps(record, draw(booleans)), f"jsonl:{pid}", future


@st.composite
def jsonl_bad(draw: st.DrawFn, n: int) -> str:
    record: dict[str, Any] = {"id": f"bad-{n}", "author": "a", "text": "t",
                              "created_at": "2026-01-01T00:00:00Z"}
    how = draw(st.integers(0, 9))
    if how == 0:  # a required field missing, empty, or of the wrong type
        key = draw(st.sampled_from(("id", "author", "text")))
        record[key] = draw(id_values_bad if key == "id" else missing_or_bad)
        if record[key] is None and draw(booleans):
            del record[key]
    elif how == 1:
        record["created_at"] = draw(bad_time_or_none)
    elif how == 2:  # an optional string field that is no string
        record[draw(st.sampled_from(("lang", "url", "author_name")))] = draw(not_strings)
    elif how == 3:
        record[draw(st.sampled_from(("reply_to", "quote_of")))] = draw(not_ids)
    elif how == 4:
        return with_surrogate(dumps(record, True), draw(st.sampled_from(("text", "author"))))
    elif how == 5:
        return dumps(record, True)[:-1] + ', "x": ' + deep(draw(depths)) + "}"
    elif how == 6:
        return draw(garbage)
    elif how == 7:  # JSON, but not an object
        return dumps(draw(not_objects), True)
    elif how == 8:
        return dumps(draw(strange_records), True)
    else:  # a post that claims a date before 1990
        # (not as milliseconds: before 1973 those read as seconds, by design)
        record["created_at"] = when(draw(ancient_after_1971), draw(how_when_no_ms))
    return dumps(record, draw(booleans))


@st.composite
def jsonl_batch(draw: st.DrawFn) -> list[tuple[str, str, str | None, bool]]:
    out = []
    for n in range(draw(st.integers(1, 30))):
        if draw(booleans):
            line, pid, future = draw(jsonl_good(n))
            out.append(("good", line, pid, future))
        else:
            out.append(("bad", draw(jsonl_bad(n)), None, False))
    return out


@fuzz(150)
@given(jsonl_batch())
def test_jsonl_parser(batch: list[tuple[str, str, str | None, bool]]) -> None:
    events = settle([parse_line(line.encode("utf-8")) for _, line, _, _ in batch])
    clamp = {pid for _, _, pid, future in batch if future and pid}
    check("jsonl", [k for k, *_ in batch], [pid for _, _, pid, _ in batch], events, clamp)


# --- Jetstream ---------------------------------------------------------------------------


def _commit_msg(n: int, record: Any, did: Any = None, rkey: Any = None,
                op: Any = "create") -> dict[str, Any]:
    return {"did": did if did is not None else f"did:plc:{n}", "time_us": 1767323045000000 + n,
            "kind": "commit", "commit": {"rev": "r", "operation": op,
                                         "collection": "app.bsky.feed.post",
                                         "rkey": rkey if rkey is not None else f"k{n}",
                                         "record": record}}


@st.composite
def jetstream_good(draw: st.DrawFn, n: int) -> tuple[str, str]:
    did, rkey = f"did:plc:{draw(word)}{n}", f"{draw(word)}{n}"
    record: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": draw(text),
                              "createdAt": when(draw(some_times), 0)}
    for key in draw(jetstream_junk):
        record[key] = draw(json_values)  # junk in optional fields is tolerated
    msg = _commit_msg(n, record, did, rkey, draw(st.sampled_from(("create", "update"))))
    return dumps(msg, draw(booleans)), f"bluesky:at://{did}/app.bsky.feed.post/{rkey}"


@st.composite
def jetstream_bad(draw: st.DrawFn, n: int) -> str:
    record: dict[str, Any] = {"text": "t", "createdAt": "2026-01-01T00:00:00Z"}
    how = draw(st.integers(0, 8))
    if how == 0:
        record["text"] = draw(not_string_or_none)
    elif how == 1:
        record["createdAt"] = draw(bad_time_or_none)
    elif how == 2:
        return dumps(_commit_msg(n, draw(record_not_dict)), True)
    elif how == 3:
        key = draw(st.sampled_from(("did", "rkey")))
        msg = _commit_msg(n, record, **{key: draw(not_string_or_empty)})
        return dumps(msg, True)
    elif how == 4:
        return dumps(_commit_msg(n, record, op=draw(unknown_ops)), True)
    elif how == 5:
        return with_surrogate(dumps(_commit_msg(n, record), True), "text")
    elif how == 6:
        return dumps(_commit_msg(n, record), True)[:-1] + ', "x": ' + deep(100_000) + "}"
    elif how == 7:
        return draw(garbage)
    else:
        return dumps(draw(not_objects), True)
    return dumps(_commit_msg(n, record), draw(booleans))


@fuzz(150)
@given(st.data())
def test_jetstream_parser(data: st.DataObject) -> None:
    kinds, ids, events = [], [], []
    for n in range(data.draw(st.integers(1, 25))):
        if data.draw(booleans):
            msg, pid = data.draw(jetstream_good(n))
            kinds.append("good")
            ids.append(pid)
        else:
            msg, pid = data.draw(jetstream_bad(n)), None
            kinds.append("bad")
            ids.append(None)
        raw = msg.encode() if data.draw(booleans) else msg
        events.append(parse_message(raw).event)
    check("jetstream", kinds, ids, settle(events))


# --- Mastodon ----------------------------------------------------------------------------


@st.composite
def mastodon_status(draw: st.DrawFn, n: int) -> dict[str, Any]:
    status: dict[str, Any] = {
        "id": str(100 + n), "uri": f"https://m.example/s/{draw(word)}{n}",
        "created_at": when(draw(some_times), int(draw(booleans))),
        "visibility": draw(st.sampled_from(("public", "unlisted"))),
        "content": "".join(draw(html_parts)),
        "account": {"acct": draw(word), "url": draw(account_urls)},
    }
    for key in draw(mastodon_junk):
        status[key] = draw(json_values)
    if isinstance(status.get("reblog"), dict):
        status["reblog"] = None  # a real reblog is tested with a real status below
    status["account"]["display_name"] = draw(maybe_text)
    return status


@st.composite
def mastodon_bad(draw: st.DrawFn, n: int) -> tuple[str, Any, str | None]:
    """(event name, payload, raw websocket message or None)."""
    status = draw(mastodon_status(n))
    how = draw(st.integers(0, 8))
    if how == 0:
        status["uri"] = draw(missing_or_bad)
    elif how == 1:
        status["account"] = draw(bad_accounts)
    elif how == 2:
        status["content"] = draw(not_string_or_none)
    elif how == 3:
        status["created_at"] = draw(bad_time_or_none)
    elif how == 4:
        payload = with_surrogate(dumps(status, True), "content")
        return "update", payload, None
    elif how == 5:
        return "update", dumps(status, True)[:-1] + ', "x": ' + deep(100_000) + "}", None
    elif how == 6:
        return "update", draw(not_objects_or_strings), None
    elif how == 7:
        return "update", draw(garbage), None
    else:  # a websocket message that is not an event
        return "", None, draw(non_events)
    return "update", dumps(status, draw(booleans)), None


@fuzz(120)
@given(st.data())
def test_mastodon_parser(data: st.DataObject) -> None:
    parser = MastodonParser("m.example")
    kinds, ids, events = [], [], []
    for n in range(data.draw(st.integers(1, 20))):
        if data.draw(booleans):
            status = data.draw(mastodon_status(n))
            payload = dumps(status, data.draw(booleans))
            kinds.append("good")
            ids.append(f"mastodon:{status['uri']}")
            if data.draw(booleans):  # the websocket form wraps the payload
                events.append(parser.parse_message(dumps({"event": "update",
                                                          "payload": payload}, True)))
            else:
                events.append(parser.parse("update", payload))
        else:
            name, payload, message = data.draw(mastodon_bad(n))
            kinds.append("bad")
            ids.append(None)
            events.append(parser.parse_message(message) if message is not None
                          else parser.parse(name, payload))
    check("mastodon", kinds, ids, settle(events))


# --- RSS / Atom / JSON Feed -------------------------------------------------------------


def _feed_events(doc: bytes, url: str) -> list[Event]:
    """What the rss source emits for one document: problems, then the items."""
    problems: list[str] = []
    try:
        posts = parse_feed(doc, url, problems=problems)
    except FeedError as exc:
        return [quarantine("rss", doc, str(exc))]
    except Exception as exc:  # as RssSource._parse: never let one feed stop the rest
        return [quarantine("rss", doc, f"parser failed: {exc!r}")]
    return [*(quarantine("rss", doc, p) for p in problems), *(Upsert(p) for p in posts)]


@fuzz(120)
@given(st.data())
def test_json_feed_parser(data: st.DataObject) -> None:
    items: list[Any] = []
    good: list[str] = []
    bad = 0
    for n in range(data.draw(st.integers(0, 15))):
        item: dict[str, Any] = {"id": f"urn:x:{n}", "title": data.draw(maybe_text),
                                "content_text": data.draw(text),
                                "date_published": when(data.draw(some_times), 0)}
        for key in data.draw(json_feed_junk):
            item[key] = data.draw(json_values)
        how = data.draw(st.integers(0, 6))
        if how == 0:
            items.append(data.draw(non_item_values))
            bad += 1
            continue
        if how == 1:
            item["date_published"] = when(data.draw(ancient_after_1900), 0)
            item.pop("date_modified", None)
            bad += 1
        elif how == 2:
            item["content_text"] = "x" + chr(0xD800)
            item.pop("summary", None)
            bad += 1
        else:
            good.append(f"rss:urn:x:{n}")
        items.append(item)
    doc = json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "t",
                      "items": items}, ensure_ascii=True).encode()
    events = settle(_feed_events(doc, "https://f.example/feed.json"))
    kept = [e.post.id for e in events if isinstance(e, Upsert)]
    quarantined = [e for e in events if isinstance(e, Quarantine)]
    FED["jsonfeed:good"] += len(good)
    FED["jsonfeed:bad"] += bad
    FED["jsonfeed:lost"] += len(set(good) - set(kept))
    assert sorted(kept) == sorted(good)
    assert len(quarantined) == bad and all(q.reason for q in quarantined)


@fuzz(80)
@given(st.data())
def test_rss_and_atom_parser(data: st.DataObject) -> None:
    atom = data.draw(booleans)
    entries: list[str] = []
    good: list[str] = []
    bad = 0
    for n in range(data.draw(st.integers(0, 10))):
        title, body = escape(data.draw(xml_text)), escape(data.draw(xml_text))
        ancient = data.draw(st.integers(0, 4)) == 0
        moment = datetime(1900, 1, 1, tzinfo=UTC) if ancient else data.draw(good_times)
        if atom:
            entries.append(f"<entry><id>urn:x:{n}</id><title>{title}</title>"
                           f"<summary>{body}</summary><updated>{when(moment, 0)}</updated>"
                           "</entry>")
        else:
            date = moment.strftime("%a, %d %b %Y %H:%M:%S GMT")
            entries.append(f"<item><guid>urn:x:{n}</guid><title>{title}</title>"
                           f"<description>{body}</description><pubDate>{date}</pubDate></item>")
        if ancient:
            bad += 1
        else:
            good.append(f"rss:urn:x:{n}")
    junk = data.draw(st.sampled_from(["", "<x>&bogus;</x>", "<![CDATA[ <<< ]]>", "\x00"]))
    if atom:
        doc = ('<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
               + "".join(entries) + "</feed>")
    else:
        doc = ('<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
               + "".join(entries) + "</channel></rss>")
    events = settle(_feed_events(doc.encode(), "https://f.example/feed"))
    if junk:  # a broken document: quarantined whole, or read as far as it goes
        broken = settle(_feed_events((doc[:len(doc) // 2] + junk).encode(),
                                     "https://f.example/feed"))
        assert all(isinstance(e, Upsert | Quarantine) for e in broken)
    kept = [e.post.id for e in events if isinstance(e, Upsert)]
    FED["rss:good"] += len(good)
    FED["rss:bad"] += bad
    FED["rss:lost"] += len(set(good) - set(kept))
    assert sorted(kept) == sorted(good)
    assert len([e for e in events if isinstance(e, Quarantine)]) == bad


@fuzz(200)
@given(st.binary(max_size=300))
def test_feed_parser_on_random_bytes(doc: bytes) -> None:
    FED["feed-bytes:bad"] += 1
    for ev in settle(_feed_events(doc, "https://f.example/feed")):
        assert isinstance(ev, Upsert | Quarantine)


# --- the NATS codec ------------------------------------------------------------------------


@st.composite
def bus_post(draw: st.DrawFn, n: int) -> Post:
    return Post(id=f"jsonl:{draw(word)}{n}", source=draw(bus_sources), author=draw(word),
                text=draw(text), created_at=draw(some_times), author_name=draw(maybe_word),
                url=draw(maybe_word), lang=draw(maybe_lang), raw=draw(bus_raws))


@st.composite
def bus_bad(draw: st.DrawFn, n: int) -> bytes:
    msg = json.loads(encode(Upsert(draw(bus_post(n))), 1 << 20).data)
    how = draw(st.integers(0, 8))
    if how == 0:
        msg["post"][draw(st.sampled_from(("id", "source", "author")))] = draw(missing_or_bad)
    elif how == 1:
        msg["post"]["created_at"] = draw(bad_time_or_none)
    elif how == 2:
        msg["post"][draw(st.sampled_from(("hashtags", "mentions")))] = draw(bad_tags)
    elif how == 3:
        msg["v"] = draw(not_version_1)
    elif how == 4:
        msg["op"] = draw(unknown_bus_ops)
    elif how == 5:
        return with_surrogate(dumps(msg, True), "text").encode()
    elif how == 6:
        return (dumps(msg, True)[:-1] + ', "x": ' + deep(100_000) + "}").encode()
    elif how == 7:
        return draw(small_binary)
    else:
        msg["post"] = draw(not_string_or_none)
    return dumps(msg, draw(booleans)).encode()


def worker_decode(data: bytes) -> Event:
    """What the index worker does with a message (``IndexWorker._decode``)."""
    try:
        return decode(data)
    except DecodeError as exc:
        return quarantine("nats", data, f"dead letter: undecodable message: {exc}")


@fuzz(150)
@given(st.data())
def test_nats_codec(data: st.DataObject) -> None:
    kinds, ids, events = [], [], []
    for n in range(data.draw(st.integers(1, 25))):
        if data.draw(booleans):
            post = data.draw(bus_post(n))
            kinds.append("good")
            ids.append(post.id)
            events.append(worker_decode(encode(Upsert(post), 1 << 20).data))
        else:
            kinds.append("bad")
            ids.append(None)
            events.append(worker_decode(data.draw(bus_bad(n))))
    check("nats", kinds, ids, settle(events))


# --- into a real store -------------------------------------------------------------------


_FILES = itertools.count()


@pytest.fixture(scope="module")
def tmp_store() -> Iterator[tuple[SQLiteStore, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "fuzz.db")
        yield store, Path(tmp)
        store.close()


@fuzz(40)
@given(batch=jsonl_batch(), surrogate_deletes=st.integers(0, 2))
def test_mixed_batches_commit_into_sqlite(
    tmp_store: tuple[SQLiteStore, Path], batch: list[tuple[str, str, str | None, bool]],
    surrogate_deletes: int,
) -> None:
    store, _ = tmp_store
    lines = [line for _, line, _, _ in batch]
    # Deletes naming an id no engine can encode reach the store (admission checks
    # posts): the pipeline must isolate them and commit the rest.
    lines += ['{"id": "' + SURROGATE + '", "deleted": true}'] * surrogate_deletes
    stats = IngestStats()
    key = f"fuzz:{next(_FILES)}"
    Ingestor(store).commit(key, Batch([parse_line(x) for x in lines], "end"), stats)
    good = [pid for kind, _, pid, _ in batch if kind == "good" and pid]
    bad = len(batch) - len(good) + surrogate_deletes
    FED["sqlite:good"] += len(good)
    FED["sqlite:bad"] += bad
    missing = [pid for pid in good if store.get_post(pid) is None]
    FED["sqlite:lost"] += len(missing)
    assert not missing and stats.quarantined == bad
    assert store.get_cursor(key) == "end"


@fuzz(25)
@given(batch=jsonl_batch())
def test_mixed_files_through_the_jsonl_source(
    tmp_store: tuple[SQLiteStore, Path], batch: list[tuple[str, str, str | None, bool]],
) -> None:
    store, tmp = tmp_store
    path = tmp / f"f{next(_FILES)}.jsonl"  # a new stream each time: no saved offsets
    path.write_bytes(b"".join(line.encode("utf-8") + b"\n" for _, line, _, _ in batch))
    stats = asyncio.run(Ingestor(store).run(JsonlSource(str(path))))
    good = [pid for kind, _, pid, _ in batch if kind == "good" and pid]
    FED["jsonl-file:good"] += len(good)
    FED["jsonl-file:bad"] += len(batch) - len(good)
    missing = [pid for pid in good if store.get_post(pid) is None]
    FED["jsonl-file:lost"] += len(missing)
    assert not missing and stats.quarantined == len(batch) - len(good)
    offsets = json.loads(store.get_cursor(f"jsonl:{path}") or "{}")["offsets"]
    assert offsets == {str(path): path.stat().st_size}



@pytest.mark.parametrize("document", [
    # What orjson reads differently or refuses: the standard library's reading stands.
    '{"id": 123456789012345678901234567890, "author": "a", "text": "t", '
    '"created_at": "2026-11-01T00:00:00Z"}',
    '{"id": "1", "author": "a", "text": "t", "created_at": 1.7e9, '
    '"reply_to": -99999999999999999999}',
    '{"id": "1", "author": "a", "text": "t", "created_at": NaN}',
    '{"id": "1", "author": "a", "text": "\\ud800", "created_at": "2026-11-01T00:00:00Z"}',
    '{"id": "1", "author": "a", "text": "t", "created_at": "2026-11-01T00:00:00Z", "x": '
    + "[" * 2000 + "]" * 2000 + "}",
    '\ufeff{"id": "1", "author": "a", "text": "t", "created_at": "2026-11-01T00:00:00Z"}',
    '{"id": "1", "author": "a", "text": "t", "created_at": "2026-11-01T00:00:00Z"} x',
])
def test_fast_json_gives_the_standard_librarys_events(
    document: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSONL and Jetstream parsers read with orjson where it agrees with ``json.loads``:
    integers past 64 bits, NaN, lone surrogates, deep nesting, a BOM and trailing bytes
    give the same post, or the same quarantine reason, as the standard library alone."""
    from townsquare.sources import _json as fast_json

    message = ('{"did":"did:plc:a","time_us":123456789012345678901234,"kind":"commit",'
               '"commit":{"operation":"delete","collection":"app.bsky.feed.post","rkey":"r"}}')
    fast = (parse_line(document), parse_line(document.encode()), parse_message(message))
    monkeypatch.setattr(fast_json, "loads", json.loads)
    slow = (parse_line(document), parse_line(document.encode()), parse_message(message))
    assert repr(fast) == repr(slow)
    assert slow[2].time_us == 123456789012345678901234
