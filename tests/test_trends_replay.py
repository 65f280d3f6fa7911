"""Acceptance: replaying real tweets (Feb 2015 US airline traffic) surfaces its real bursts.

Each burst asserted here was checked against the tweets behind it (see the
trends report in ``benchmarks/bench_trends.py --report``):

- Thu Feb 19, ~07:40-08:30 (-08:00): a run of "Congrats!" replies to
  @SouthwestAir mentioning @FortuneMagazine (Southwest on Fortune's most
  admired companies list);
- Feb 18-20: #DestinationDragons, Southwest's Imagine Dragons concert promotion;
- Sat Feb 21 - Sun Feb 22: cancellations ("Cancelled Flightled" is how this
  export spells "Cancelled") and hours "on hold" to rebook, in winter weather;
- Mon Feb 23, from ~10:30: JetBlue's "Our fleet's on fleek" tweet, quoted
  and retweeted by dozens of people within two hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from conftest import shared_data
from townsquare.model import Post
from townsquare.trends import TrendDetector, TrendEngine
from townsquare.trends.replay import load_tweets_csv, replay
from trends_helpers import Recount

PST = timezone(timedelta(hours=-8))

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def tweets() -> list[Post]:
    return load_tweets_csv(shared_data("tweets") / "Tweets.csv")


def test_loader_reads_every_unique_tweet_in_time_order(tweets: list[Post]) -> None:
    assert len(tweets) == 14_485
    assert all(a.created_at <= b.created_at for a, b in pairwise(tweets))
    assert tweets[0].id.startswith("tweets:") and tweets[0].author


def test_hourly_replay_surfaces_the_real_bursts(tweets: list[Post]) -> None:
    det = TrendDetector()
    found: dict[str, list[datetime]] = {}
    for cp in replay(det, tweets, timedelta(minutes=30), windows=("1h",), limit=5):
        for t in cp.trends:
            found.setdefault(t.feature, []).append(cp.at.astimezone(PST))
    fleek = found.get("t:fleek", []) + found.get("t:fleet", [])
    assert fleek and min(fleek) == datetime(2015, 2, 23, 10, 30, tzinfo=PST)
    assert any(d.day == 19 and d.hour == 8 for d in found["e:@fortunemagazine"])
    assert any(d.day == 21 for d in found["e:cancelled flightled"])
    assert any(d.day == 21 for d in found["t:hold"])


def test_daily_replay_surfaces_the_real_bursts(tweets: list[Post]) -> None:
    det = TrendDetector()
    days: dict[int, set[str]] = {}
    checkpoints = [datetime(2015, 2, d, tzinfo=PST) for d in range(18, 26)]
    i = 0
    for at in checkpoints:
        while i < len(tweets) and tweets[i].created_at < at:
            det.add(tweets[i])
            i += 1
        det.advance(at - timedelta(microseconds=1))
        days[at.day - 1] = {t.feature for t in det.trends("24h", 8)}
    assert "#destinationdragons" in days[19]
    assert "e:@fortunemagazine" in days[19]
    assert {"e:cancelled flightled", "t:hold"} <= days[21]
    assert "t:fleek" in days[23] or "t:fleet" in days[23]
    assert "e:@americanair" in days[22]  # the export's American Airlines coverage starts here


def test_the_fleek_story_folds_its_retweets(tweets: list[Post]) -> None:
    engine = TrendEngine()
    at = datetime(2015, 2, 23, 12, 0, tzinfo=PST)
    engine.add_many(p for p in tweets if p.created_at < at)
    engine.detector.advance(at - timedelta(microseconds=1))
    story = engine.stories("1h")[0]
    assert {"t:fleek", "t:fleet"} <= set(story.features)
    assert story.size >= 45 and story.unique_posts < story.size  # retweets folded
    for pid in story.representative_ids:
        assert "fleek" in engine.post(pid).text.lower()  # type: ignore[union-attr]


def test_counts_on_real_tweets_match_a_brute_force_recount(tweets: list[Post]) -> None:
    det = TrendDetector()
    ref = Recount(60, {"5m": 5, "1h": 60, "24h": 1440}, cap=det.per_author_cap)
    stop = datetime(2015, 2, 23, 12, 0, tzinfo=PST)
    for p in tweets:
        if p.created_at >= stop:
            break
        ref.add(p, det.add(p))
    for window in ("5m", "1h", "24h"):
        want = ref.counts(window)
        assert det.counts(window) == want
        assert det.totals(window) == ref.totals(window)
        for f in sorted(want, key=lambda f: -want[f])[:25]:
            got = det.stats(f, window)
            assert got is not None
            assert (got.count, got.posts, got.authors, got.support) == tuple(
                ref.stats(f, window)[k] for k in ("count", "posts", "authors", "support")
            )
