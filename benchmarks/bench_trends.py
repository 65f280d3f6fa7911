"""Trend detection: update throughput, query latency, and the Tweets.csv acceptance replay.

    python benchmarks/bench_trends.py [--posts 200000] [--runs 3] [--report]
                                      [--no-throughput] [--no-queries] [--no-tweets]

Throughput: posts fed through ``TrendDetector.add`` (feature extraction
included) and through ``TrendEngine.add`` (plus the recent-posts buffer and
its lock), on one core, and on two (features extracted by a
``ParallelExtractor`` worker while this process counts), the process pinned
to 2 cores; on generated traffic with a Zipfian vocabulary (English and
French, stop words, names, hashtags, mentions, URLs, late posts, injected
bursts) and on the real tweets. Target (issue 5): >= 20,000 posts/s on 2 cores.

``--report`` replays ../shared/data/tweets/Tweets.csv in time order (eight
days of February 2015 airline traffic) and prints, per day and per hour,
the bursts the detector finds and the stories built from them.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED, max_rss_mb, table
from townsquare.model import Post
from townsquare.trends import FeatureExtractor, TrendDetector, TrendEngine
from townsquare.trends.features import STOP_WORDS
from townsquare.trends.parallel import ParallelExtractor
from townsquare.trends.replay import load_tweets_csv, replay

TWEETS = SHARED / "tweets" / "Tweets.csv"

# -- generated traffic ---------------------------------------------------------

_EN = (
    "train strike metro station delay cancelled commuters platform rail union storm snow rain "
    "flood heatwave forecast wind warning temperature release bug update phone laptop chip "
    "software outage server launch match goal team coach league final score player injury "
    "transfer vote election minister parliament bill debate policy campaign poll recipe "
    "restaurant coffee bread cheese dinner market chef lunch bakery flight airport hotel "
    "ticket concert album movie series episode book museum school teacher hospital doctor"
).split()
_FR = (
    "grève train métro école élection pluie orage marché fromage équipe défaite victoire "
    "ministre député réforme retraite santé hôpital médecin cinéma musique théâtre été hiver "
    "neige chaleur vacances plage montagne vélo voiture autoroute péage boulangerie café"
).split()
_EN_STOP = sorted(w for w in STOP_WORDS if w.isascii() and len(w) > 1)[:120]
_SYL = "ba be bi bo bu ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu ra re ri ro ru"


def _zipf_sampler(n: int, s: float, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** s)
    cdf /= cdf[-1]
    return lambda k: np.minimum(np.searchsorted(cdf, rng.random(k)), n - 1)


def generate(n: int, hours: float = 24.0, seed: int = 5) -> list[Post]:
    """Synthetic posts in (mostly) time order with a realistic long-tailed vocabulary."""
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    syl = _SYL.split()
    synthetic = {
        "".join(pyrng.choice(syl) for _ in range(pyrng.randint(2, 4))) for _ in range(60_000)
    }
    words = _EN + _FR + sorted(synthetic)
    pyrng.shuffle(words)
    entities = [
        " ".join(w.capitalize() for w in pyrng.sample(words[:5000], pyrng.randint(1, 3)))
        for _ in range(3000)
    ]
    tags = ["#" + w for w in pyrng.sample(words, 5000)]
    handles = [f"@user{i}" for i in range(20_000)]
    word_of = _zipf_sampler(len(words), 1.1, rng)
    tag_of = _zipf_sampler(len(tags), 1.2, rng)
    ent_of = _zipf_sampler(len(entities), 1.1, rng)
    handle_of = _zipf_sampler(len(handles), 1.1, rng)
    author_of = _zipf_sampler(100_000, 1.05, rng)

    start = datetime(2026, 3, 1, tzinfo=UTC)
    span = hours * 3600.0
    times = np.sort(rng.random(n) * span)
    authors, ents, tagi, handi = author_of(n), ent_of(n), tag_of(n), handle_of(n)
    lengths = np.clip(rng.normal(16, 6, n).astype(int), 4, 45)
    content = word_of(int(lengths.sum()))
    stop_draw = rng.random(int(lengths.sum()))
    bursts = [  # (start fraction, minutes, posts, text): real events need many authors
        (0.30, 45, 1500, "Orage violent sur Lyon, #alerteorange"),
        (0.55, 30, 800, "Apple announces the Vision Air #WWDC"),
        (0.70, 90, 2500, "Huge power outage in Madrid right now #apagon"),
        (0.90, 20, 400, "Goal! Mbappé scores in the final"),
    ]
    posts: list[tuple[float, Post]] = []  # (arrival time, post)
    pos = 0
    for i in range(n):
        k = int(lengths[i])
        toks: list[str] = []
        for j in range(k):
            if stop_draw[pos + j] < 0.42:
                toks.append(_EN_STOP[(pos + j) % len(_EN_STOP)])
            else:
                toks.append(words[content[pos + j]])
        pos += k
        r = pyrng.random()
        if r < 0.25:
            toks.insert(pyrng.randrange(len(toks)), entities[ents[i]])
        if r < 0.3:
            toks.append(tags[tagi[i]])
        if pyrng.random() < 0.4:
            toks.insert(0, handles[handi[i]])
        if pyrng.random() < 0.2:
            toks.append(f"https://example.org/{i}")
        text = " ".join(toks).capitalize() + pyrng.choice([".", "!", "", " ?"])
        t = float(times[i])
        post = Post(id=f"gen:{i}", source="bench", author=f"a{authors[i]}", text=text,
                    created_at=start + timedelta(seconds=t))
        posts.append((t + _delay(pyrng), post))
    for frac, minutes, count, text in bursts:
        for j in range(count):
            t = frac * span + pyrng.random() * minutes * 60
            post = Post(id=f"burst:{text[:8]}:{j}", source="bench",
                        author=f"b{pyrng.randrange(count)}", text=text, created_at=start
                        + timedelta(seconds=t))
            posts.append((t + _delay(pyrng), post))
    posts.sort(key=lambda x: x[0])
    return [p for _, p in posts]


def _delay(rng: random.Random) -> float:
    """Arrival lag: 5% of posts reach the detector up to two minutes late."""
    return rng.random() * 120.0 if rng.random() < 0.05 else 0.0


# -- throughput ------------------------------------------------------------------


def pin_two_cores() -> str:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 2:
            os.sched_setaffinity(0, set(cpus[:2]))
        return f"{len(os.sched_getaffinity(0))} cores"
    except (AttributeError, OSError):
        return "unpinned"


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Best wall and CPU seconds over ``runs``."""
    best_wall = best_cpu = float("inf")
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu


def throughput(datasets: dict[str, list[Post]], runs: int) -> None:
    rows: list[list[object]] = []
    with ParallelExtractor(workers=1) as px:
        list(px.map(datasets["generated"][:10]))  # start the worker outside the timings
        for name, posts in datasets.items():
            span_h = (posts[-1].created_at - posts[0].created_at).total_seconds() / 3600
            ex = FeatureExtractor()
            feats = sum(len(ex.extract(p.text)) for p in posts) / len(posts)

            def extract_only(posts: list[Post] = posts) -> None:
                ex = FeatureExtractor()
                for p in posts:
                    ex.extract(p.text)

            def serial(make: Callable[[], TrendDetector | TrendEngine],
                       posts: list[Post] = posts) -> None:
                make().add_many(posts)

            def parallel(make: Callable[[], TrendDetector | TrendEngine],
                         posts: list[Post] = posts) -> None:
                target = make()
                for post, features in px.map(posts):
                    target.add(post, features)

            paths: list[tuple[str, Callable[[], None]]] = [
                ("extract only, 1 core", extract_only),
                ("detector, 1 core", lambda: serial(TrendDetector)),
                ("engine, 1 core", lambda: serial(TrendEngine)),
                ("detector, 2 cores", lambda: parallel(TrendDetector)),
                ("engine, 2 cores", lambda: parallel(TrendEngine)),
            ]
            for label, fn in paths:
                wall, cpu = timed(fn, runs)
                rows.append([name, label, len(posts), round(span_h, 1), round(feats, 1),
                             round(wall, 2), len(posts) / wall, len(posts) / cpu])
    print(table(f"trend update throughput (best of {runs} runs; posts/main-CPU-s counts "
                "this process only)",
                ["data", "path", "posts", "span h", "feats/post", "seconds", "posts/s",
                 "posts/main-CPU-s"], rows))


def queries(n: int) -> None:
    """Query latency on a warm detector: two days of traffic, so the day has a baseline."""
    posts = generate(n, hours=48.0, seed=6)
    gc.freeze()
    engine = TrendEngine()
    engine.add_many(posts, workers=1)
    rows: list[list[object]] = []
    for window in ("5m", "1h", "24h"):
        t = time.perf_counter()
        found = engine.trends(window, 20)
        tq = time.perf_counter() - t
        t = time.perf_counter()
        stories = engine.stories(window, 10)
        ts = time.perf_counter() - t
        rows.append([window, len(found), round(tq * 1000, 1), len(stories), round(ts * 1000, 1),
                     ", ".join(t.label for t in found[:3]) or "-"])
    print(table(f"\nquery latency after {len(posts):,} generated posts over 48 h",
                ["window", "trends", "ms", "stories", "ms", "top trends"], rows))
    mem = engine.detector.memory()
    print("detector holds " + ", ".join(f"{k} {v:,}" for k, v in mem.items()))
    print(f"max RSS {max_rss_mb():,.0f} MB")


# -- acceptance report ------------------------------------------------------------

PST = timezone(timedelta(hours=-8))


def _fmt(t: object) -> str:
    from townsquare.trends import Trend

    assert isinstance(t, Trend)
    return f"{t.label} ({t.score:.1f}; {t.posts} posts, {t.authors} authors, exp {t.expected:.1f})"


def report(posts: Sequence[Post]) -> None:
    print(f"\nreplaying {len(posts):,} tweets, {posts[0].created_at.astimezone(PST):%b %d %H:%M} "
          f"to {posts[-1].created_at.astimezone(PST):%b %d %H:%M} (times in the data's -08:00)")
    # Hourly: the 1h window at every hour; the 5m window every 5 minutes.
    det = TrendDetector()
    print("\nhourly bursts (1h window each hour, score >= 4; top 3)")
    five: list[tuple[float, datetime, str]] = []
    for cp in replay(det, posts, timedelta(minutes=5), windows=("1h", "5m"), limit=3):
        at = cp.at.astimezone(PST)
        strong = [t for t in cp.trends if t.score >= 4.0]
        if cp.window == "5m":
            five += [(t.score, at, _fmt(t)) for t in strong]
        elif strong and at.minute == 0:
            cold = " (cold baseline)" if det.baseline_mass("1h") < det.totals("1h")[0] else ""
            print(f"  {at:%a %d %H:%M}{cold}: " + " | ".join(_fmt(t) for t in strong))
    print("\nstrongest 5-minute bursts (5m window every 5 minutes; best per hour)")
    best: dict[str, tuple[float, datetime, str]] = {}
    for score, at, text in five:
        key = at.strftime("%d %H")
        if key not in best or score > best[key][0]:
            best[key] = (score, at, text)
    for _score, at, text in sorted(best.values(), key=lambda x: -x[0])[:12]:
        print(f"  {at:%a %d %H:%M}: {text}")
    # Daily: the 24h window at local midnight, and its stories.
    engine = TrendEngine()
    print("\ndaily bursts (24h window at midnight -08:00, top 6) and stories (top 3)")
    midnights = sorted({
        datetime.combine(p.created_at.astimezone(PST).date(), datetime.min.time(), PST)
        + timedelta(days=1)
        for p in posts
    })
    i = 0
    for midnight in midnights:
        while i < len(posts) and posts[i].created_at < midnight:
            engine.add(posts[i])
            i += 1
        engine.detector.advance(midnight - timedelta(microseconds=1))
        day = (midnight - timedelta(days=1)).strftime("%a %b %d")
        cold = engine.detector.baseline_mass("24h") < engine.detector.totals("24h")[0]
        found = engine.trends("24h", 6)
        print(f"  {day}{' (cold baseline)' if cold else ''}: "
              + (" | ".join(_fmt(t) for t in found) or "-"))
        for s in engine.stories("24h", 3):
            print(f"      story [{s.id}] {s.title}: {s.size} posts ({s.unique_posts} unique), "
                  f"{s.authors} authors, {s.first_seen.astimezone(PST):%a %H:%M}"
                  f"-{s.last_seen.astimezone(PST):%a %H:%M}")
            for pid in s.representative_ids[:2]:
                p = engine.post(pid)
                if p is not None:
                    print(f"        @{p.author}: {p.text[:110]!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="Tweets.csv acceptance replay.")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-queries", action="store_true")
    ap.add_argument("--no-tweets", action="store_true", help="Throughput on generated posts only.")
    args = ap.parse_args()
    tweets = load_tweets_csv(TWEETS) if TWEETS.exists() else []
    if not args.no_throughput:
        cores = pin_two_cores()
        t = time.perf_counter()
        generated = generate(args.posts)
        print(f"generated {len(generated):,} posts in {time.perf_counter() - t:.1f}s; "
              f"running on {cores}")
        data = {"generated": generated}
        if tweets and not args.no_tweets:
            data["Tweets.csv"] = tweets
        # The input posts live for the whole run here; in the service they are
        # transient. Keep the cyclic GC from re-scanning them on every pass.
        gc.freeze()
        throughput(data, args.runs)
        if not args.no_queries:
            queries(args.posts)
    if args.report:
        if not tweets:
            sys.exit(f"{TWEETS} not found")
        report(tweets)


if __name__ == "__main__":
    main()
