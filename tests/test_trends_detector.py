"""The trend detector: exact counts, sliding windows, baselines, spam resistance."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from townsquare.model import Post
from townsquare.trends import TrendDetector, WindowSpec, burst_score
from trends_helpers import T0, Recount, background, post

SMALL = (
    WindowSpec("30s", 30, 60.0),  # a short time constant: baselines rebase often
    WindowSpec("2m", 120, 600.0),
    WindowSpec("10m", 600, 3600.0),
)
WORDS = "alpha beta gamma delta #red #blue Paris Lyon".split()


def _check_exact(det: TrendDetector, ref: Recount) -> None:
    for name in ref.windows:
        expected = ref.counts(name)
        assert det.counts(name) == expected, name
        assert det.totals(name) == ref.totals(name), name
        for f in expected:
            got = det.stats(f, name)
            assert got is not None, (f, name)
            want = ref.stats(f, name)
            assert {k: getattr(got, k) for k in want} == want, (f, name)


def _random_stream(seed: int, n: int) -> list[tuple[Post, datetime | None]]:
    """Posts with jitter, late arrivals, long gaps, duplicates; some followed by a clock tick."""
    rng = random.Random(seed)
    clock = T0
    out: list[tuple[Post, datetime | None]] = []
    for i in range(n):
        step = rng.choice([0, 1, 2, 5, 10, 30, 90])
        if rng.random() < 0.01:
            step = 1500  # a gap longer than every window
        clock += timedelta(seconds=step, milliseconds=rng.randrange(1000))
        at = clock - timedelta(seconds=rng.choice([0, 0, 0, 3, 20, 100, 400, 900]))
        words = rng.sample(WORDS, rng.randint(1, 4))
        p = post(f"p{i}", f"a{rng.randrange(6)}", " ".join(words), at)
        tick = clock + timedelta(seconds=rng.randrange(200)) if rng.random() < 0.05 else None
        out.append((p, tick))
        if rng.random() < 0.03:
            out.append((p, None))  # the same post again (a replay)
    return out


def _replay(stream: list[tuple[Post, datetime | None]], every: int) -> None:
    det = TrendDetector(windows=SMALL, bucket_seconds=10, per_author_cap=2)
    ref = Recount(10, {"30s": 3, "2m": 12, "10m": 60}, cap=2)
    for i, (p, tick) in enumerate(stream):
        ref.add(p, det.add(p))
        if tick is not None:
            det.advance(tick)
            ref.advance(tick)
        if i % every == 0:
            _check_exact(det, ref)
    _check_exact(det, ref)
    # The stream exercised every path: late posts, too-old posts, replays.
    assert det.too_old > 0 and det.duplicates > 0
    assert det.added == len(ref.rows)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counts_match_a_brute_force_recount(seed: int) -> None:
    _replay(_random_stream(seed, 1500), every=97)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(-700, 700),  # seconds from the previous post's clock (negative: late)
            st.integers(0, 4),  # author
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_counts_match_recount_for_any_arrival_order(
    steps: list[tuple[int, int, list[str]]],
) -> None:
    det = TrendDetector(windows=SMALL, bucket_seconds=10, per_author_cap=2)
    ref = Recount(10, {"30s": 3, "2m": 12, "10m": 60}, cap=2)
    clock = T0
    for i, (dt, author, words) in enumerate(steps):
        clock = clock + timedelta(seconds=dt)
        p = post(f"h{i}", f"a{author}", " ".join(words), clock)
        ref.add(p, det.add(p))
    _check_exact(det, ref)


def test_windows_slide_with_event_time_and_features_are_forgotten() -> None:
    det = TrendDetector()
    for i in range(5):
        det.add(post(f"x{i}", f"u{i}", "volcano eruption #iceland", T0 + timedelta(seconds=i)))
    assert det.counts("5m")["#iceland"] == 5
    det.advance(T0 + timedelta(minutes=6))
    assert "#iceland" not in det.counts("5m")
    assert det.counts("1h")["#iceland"] == 5
    det.advance(T0 + timedelta(minutes=61))
    assert "#iceland" not in det.counts("1h")
    assert det.counts("24h")["#iceland"] == 5
    det.advance(T0 + timedelta(hours=24, minutes=2))
    assert det.counts("24h") == {}
    assert det.totals("24h") == (0, 0)
    assert det.memory()["buckets"] == 0 and det.memory()["post_ids"] == 0
    # Baselines decay (the day's has a week's time constant): a month later
    # nothing of these posts is held at all.
    det.advance(T0 + timedelta(days=8))
    assert det.memory()["features"] == 4  # still part of the 24h window's baseline
    det.advance(T0 + timedelta(days=30))
    assert det.memory()["features"] == 0


def test_memory_stays_bounded_on_an_open_vocabulary() -> None:
    windows = (WindowSpec("5m", 300, 600.0), WindowSpec("1h", 3600, 1800.0))
    det = TrendDetector(windows=windows)
    for i in range(24 * 60):  # a day, one post a minute, every word new
        det.add(post(f"o{i}", f"u{i % 50}", f"word{i} thing{i}", T0 + timedelta(minutes=i)))
    held = det.memory()
    # About the last hour plus the time a hapax baseline takes to decay below the
    # minimum (tau*ln 2, ~21 min) plus a sweep interval; never the whole day.
    assert held["features"] < 3 * 60 * 3
    assert held["buckets"] <= 60


def test_a_spammer_never_trends() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=30, seed=2))
    burst_at = T0 + timedelta(hours=30)
    for i in range(1000):  # 1,000 posts of one hashtag in an hour, one author
        at = burst_at + timedelta(seconds=3.6 * i)
        det.add(post(f"spam{i}", "spammer", "#buyfollowers cheap", at))
    for window in ("5m", "1h", "24h"):
        assert all(t.feature != "#buyfollowers" for t in det.trends(window, 50, min_score=0.0))
        stats = det.stats("#buyfollowers", window)
        assert stats is not None and stats.authors == 1


def test_a_slow_spammer_over_many_hours_never_trends() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=30, seed=3))
    for i in range(1000):  # one a minute for 16+ hours: 1,000 author-minutes
        det.add(post(f"s{i}", "bot", "#buyfollowers", T0 + timedelta(hours=14, minutes=i)))
    assert det.stats("#buyfollowers", "24h").count == 1000  # type: ignore[union-attr]
    assert all(t.feature != "#buyfollowers" for t in det.trends("24h", 50, min_score=0.0))


def test_the_same_volume_across_fifty_authors_trends() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=30, seed=2))
    burst_at = T0 + timedelta(hours=30)
    for i in range(1000):
        at = burst_at + timedelta(seconds=3.6 * i)
        det.add(post(f"b{i}", f"fan{i % 50}", "#buyfollowers cheap", at))
    top = det.trends("1h", 5)
    assert top and top[0].feature == "#buyfollowers"
    assert top[0].authors == 50 and top[0].posts == 1000
    # Each author counts at most per_author_cap (3) times in the window.
    assert top[0].support == 150 and top[0].count >= top[0].support
    assert top[0].score == pytest.approx(burst_score(150, top[0].expected))
    assert len(top[0].sample_ids) == 5


def test_stop_words_and_a_perennial_hashtag_never_trend() -> None:
    det = TrendDetector()
    posts = background(T0, hours=72, seed=4, extra_tag="#news", extra_share=0.3)
    # Stop words in English and French, in every post, by everyone.
    posts = [
        post(p.id, p.author, "the and of le la les de " + p.text, p.created_at) for p in posts
    ]
    checkpoints = [T0 + timedelta(hours=h) for h in range(30, 72, 3)]
    checked = 0
    for p in posts:
        while checkpoints and p.created_at >= checkpoints[0]:
            checkpoints.pop(0)
            checked += 1
            for window in ("5m", "1h", "24h"):
                for t in det.trends(window, 50, dedupe=False):
                    assert t.feature != "#news", window
                    assert t.feature not in {"t:the", "t:and", "t:le", "t:les", "t:de"}
        det.add(p)
    assert checked == 14
    assert det.stats("#news", "24h").authors > 300  # type: ignore[union-attr]
    assert det.stats("t:the", "24h") is None


def test_a_perennial_hashtag_trends_when_it_bursts_against_its_own_baseline() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=48, seed=5, extra_tag="#news", extra_share=0.2))
    at = T0 + timedelta(hours=48)
    for i in range(300):  # news breaks: everyone tags it, in a quarter of an hour
        det.add(post(f"n{i}", f"user{i}", "#news earthquake", at + timedelta(seconds=3 * i)))
    news = {t.feature: t for t in det.trends("1h", 10, dedupe=False)}["#news"]
    assert news.authors >= 300 and news.support > 3 * news.expected
    # De-duplicated, the one story shows once: the new word, not the usual tag.
    assert [t.feature for t in det.trends("1h", 10)] == ["t:earthquake"]


def test_french_burst_with_and_without_accents() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=30, seed=6))
    at = T0 + timedelta(hours=30)
    for i in range(40):
        text = "Grève générale à la SNCF ce matin" if i % 2 else "greve generale a la sncf, encore"
        det.add(post(f"f{i}", f"voyageur{i}", text, at + timedelta(seconds=20 * i)))
    trends = det.trends("1h", 10)
    by_feature = {t.feature: t for t in trends}
    assert "p:greve generale" in by_feature or "t:greve" in by_feature
    stats = det.stats("t:greve", "1h")
    assert stats is not None and stats.authors == 40  # both spellings are one feature
    assert det.label("t:greve") == "grève"
    assert det.label("e:sncf") == "SNCF"


def test_unseen_terms_need_real_volume() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=30, seed=7))
    at = T0 + timedelta(hours=30)
    for i in range(3):  # three people say a new word: not a trend
        det.add(post(f"q{i}", f"z{i}", "zeppelin", at + timedelta(seconds=i)))
    assert not det.trends("1h")
    for i in range(3, 30):
        det.add(post(f"q{i}", f"z{i}", "zeppelin", at + timedelta(seconds=i)))
    assert [t.feature for t in det.trends("1h")] == ["t:zeppelin"]


def test_dedupe_folds_restatements_of_one_trend() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=30, seed=8))
    at = T0 + timedelta(hours=30)
    for i in range(40):
        det.add(post(f"d{i}", f"d{i}", "wow Imagine Dragons tonight", at + timedelta(seconds=i)))
    folded = det.trends("1h", 10)
    everything = det.trends("1h", 10, dedupe=False)
    assert len(folded) == 1 and len(everything) >= 4  # imagine, dragons, phrase, entity, ...
    assert folded[0].feature == everything[0].feature
    assert det.trends("1h", 10, kinds=["entity"])[0].label == "Imagine Dragons"
    with pytest.raises(ValueError, match="unknown kind"):
        det.trends("1h", kinds=["topic"])
    with pytest.raises(ValueError, match="unknown window"):
        det.trends("2h")


def test_a_clock_keeps_future_stamped_posts_from_sliding_the_windows() -> None:
    now = T0 + timedelta(hours=1)
    det = TrendDetector(clock=lambda: now, max_future_s=60)
    det.add(post("early", "a", "hello world", now - timedelta(minutes=1)))
    det.add(post("skewed", "b", "hello world", now + timedelta(days=3)))  # taken as now + 60 s
    assert det.counts("5m")["t:hello"] == 2
    assert det.now == now + timedelta(minutes=2)


def test_trends_carry_what_surfaces_show() -> None:
    det = TrendDetector()
    det.add_many(background(T0, hours=30, seed=9))
    at = T0 + timedelta(hours=30)
    for i in range(30):
        det.add(post(f"e{i}", f"e{i}", "#Eclipse now", at + timedelta(seconds=10 * i)))
    t = det.trends("1h", 1)[0]
    d = t.to_dict()
    assert d["feature"] == "#eclipse" and d["label"] == "#Eclipse" and d["kind"] == "hashtag"
    assert d["first_seen"] == "2026-03-03T06:00:00Z"
    assert d["last_seen"] == "2026-03-03T06:04:50Z"
    assert d["posts"] == d["authors"] == d["count"] == 30
    assert d["expected"] > 0 and d["score"] > 3
    assert set(d["sample_ids"]) <= {f"e{i}" for i in range(30)}
    assert det.now == datetime(2026, 3, 3, 6, 5, tzinfo=UTC)


def test_extraction_in_a_worker_process_counts_the_same() -> None:
    posts = background(T0, hours=3, seed=12)
    serial, parallel = TrendDetector(), TrendDetector()
    assert serial.add_many(posts) == parallel.add_many(posts, workers=1) == len(posts)
    for window in ("5m", "1h", "24h"):
        assert serial.counts(window) == parallel.counts(window)
        assert serial.totals(window) == parallel.totals(window)
