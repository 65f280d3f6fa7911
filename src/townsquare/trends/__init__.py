"""Trends and stories over the live stream (issue 5's core).

Public entry points, left to right:

- :func:`extract_features` — hashtags, terms, phrases, entities of a text;
- :class:`TrendDetector` — sliding windows (5m, 1h, 24h), per-feature
  baselines, burst scores, author thresholds; ``add(post)``/``trends()``;
- :class:`StoryBuilder` — trending posts clustered into :class:`Story`
  objects with a summarizer hook;
- :class:`TrendEngine` — the three behind one lock, rebuilt from a store.

The service, CLI and chat use these; nothing here knows about HTTP.
"""

from townsquare.trends.detector import TrendDetector
from townsquare.trends.engine import TrendEngine
from townsquare.trends.features import FeatureExtractor, extract_features, fold, kind_of
from townsquare.trends.recent import RecentPosts
from townsquare.trends.results import FeatureStats, Trend
from townsquare.trends.stories import AsyncSummarizer, Story, StoryBuilder, Summarizer
from townsquare.trends.windows import DEFAULT_WINDOWS, WindowSpec, burst_score

__all__ = [
    "DEFAULT_WINDOWS",
    "AsyncSummarizer",
    "FeatureExtractor",
    "FeatureStats",
    "RecentPosts",
    "Story",
    "StoryBuilder",
    "Summarizer",
    "Trend",
    "TrendDetector",
    "TrendEngine",
    "WindowSpec",
    "burst_score",
    "extract_features",
    "fold",
    "kind_of",
]
