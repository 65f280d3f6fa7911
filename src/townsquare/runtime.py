"""The composition root: the one place that builds townsquare's parts and wires them.

Two objects, one module, so that "which store, which embedder, which LLM,
who hears committed posts" is decided here and nowhere else:

- :class:`Runtime` is what every command needs: store, embedder, ingest
  limits, retriever, LLMs, the answer engine, the story summarizer, a trend
  engine built from the store, an ingest supervisor for named sources. Each
  part is built on first use and kept (``townsquare search`` never loads an
  LLM, ``--help`` never opens a database, the local LLM loads when the first
  question needs it). The CLI and the service both get their parts here.
- :class:`Live` is a serving process around a runtime: the live feed of
  committed posts, the trend engine warmed from the store and fed by that
  feed, the watch hub, the story loop, the identity lookup and the dense
  index follower, started and stopped together (:meth:`Live.start`,
  :meth:`Live.stop`). ``create_app`` builds one; routes read from it.

Every listener is wired in :class:`Live`'s constructor: the supervisor's
committed posts go to the feed, the feed goes to the search-cache
invalidation the app passes in, the watch hub and (once warm) the trend
engine. Nothing is attached from outside after construction; the one part
filled in later is :attr:`Live.trends`, ``None`` while it warms up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from townsquare.config import Settings
from townsquare.index import EMBEDDERS, Embedder
from townsquare.ingest import Ingestor, Limits
from townsquare.ingest.feed import PostFeed
from townsquare.ingest.pipeline import Listener
from townsquare.model import Post
from townsquare.retrieval import Retriever
from townsquare.store import Store, open_store
from townsquare.timeutil import parse_duration, utcnow

if TYPE_CHECKING:
    from townsquare.answer import AnswerEngine
    from townsquare.answer.policy import Policy
    from townsquare.answer.summaries import StorySummarizer
    from townsquare.ingest.identity import IdentityLookup
    from townsquare.ingest.supervisor import Supervisor
    from townsquare.llm import LLM
    from townsquare.sources import Source
    from townsquare.trends import TrendEngine
    from townsquare.trends.story_loop import StoryLoop
    from townsquare.watches import WatchHub

log = logging.getLogger(__name__)
T = TypeVar("T")

log = logging.getLogger(__name__)


class Runtime:
    """The parts of townsquare for one settings object, each built once, on first use."""

    def __init__(self, settings: Settings, read_only: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only
        # One lock per part: a request reading the store never waits for the
        # embedder to load (or distill) behind another part's lock.
        self._locks = {part: threading.Lock() for part in
                       ("store", "embedder", "limits", "retriever", "llm", "engine")}
        self._built: dict[str, Any] = {}
        self._llms: dict[str, LLM] = {}

    def _once(self, part: str, build: Callable[[], T]) -> T:
        """``part``, built by ``build`` the first time it is asked for."""
        with self._locks[part]:
            if part not in self._built:
                self._built[part] = build()
            made: T = self._built[part]
            return made

    # --- storage and search ---------------------------------------------------------

    @property
    def store(self) -> Store:
        return self._once("store", lambda: open_store(
            self.settings.store, self.settings.home, read_only=self.read_only))

    @property
    def embedder(self) -> Embedder | None:
        """The configured embedder (``None`` for ``embedder = "none"``); may take a while."""
        return self._once("embedder", self._make_embedder)

    def _make_embedder(self) -> Embedder | None:
        """The configured embedder; for a home whose vectors another one made, that one.

        Vectors of two embedders are not comparable (and ``minilm-static`` and
        ``use-static`` have the same width, so nothing would notice). A home
        indexed before the default changed keeps the embedder it recorded,
        unless one was chosen explicitly (flag, env, config.toml): then the
        store refuses the mix, as it always did.
        """
        name = self.settings.embedder
        if name == "none":
            return None
        holds = self.store.embedder_name()
        if "embedder" not in self.settings.model_fields_set:
            recorded = (holds or "").rpartition("/")[0]
            if recorded and recorded != name:
                log.warning(
                    "this home's vectors were made by the %s embedder: using it, not the "
                    "default %s (set embedder = %r to silence this, or start a fresh home "
                    "to use %s)", recorded, name, recorded, name)
                name = recorded
        embedder = EMBEDDERS.create(name, cache_dir=self.settings.cache_dir)
        if holds and holds != f"{embedder.name}/{embedder.dim}":
            raise ValueError(
                f"this store holds vectors from embedder {holds!r}, not "
                f"{embedder.name}/{embedder.dim}; use the same --embedder or a fresh store"
            )
        return embedder

    @property
    def limits(self) -> Limits:
        """The ingest bounds every source's posts meet (time, size, types)."""
        return self._once("limits", lambda: Limits.from_settings(self.settings))

    def ingestor(self, listeners: list[Listener] | None = None) -> Ingestor:
        """The ingest pipeline into this runtime's store, with its embedder and limits."""
        return Ingestor(self.store, self.embedder, listeners, self.limits)

    def supervisor(self, sources: Iterable[tuple[str, Source]]) -> Supervisor:
        """An ingest supervisor running ``sources`` into the store.

        The embedder is handed over unbuilt: the supervisor loads it in a
        worker thread when it starts, so a server answers while a model
        loads (or distills, on a first start).
        """
        from townsquare.ingest.supervisor import Supervisor

        return Supervisor(self.store, lambda: self.embedder, sources, limits=self.limits)

    @property
    def retriever(self) -> Retriever:
        return self._once("retriever", lambda: Retriever(
            self.store, self.embedder, half_life=parse_duration(self.settings.half_life)))

    def dense_seq(self) -> int:
        """The newest vector sequence the dense index has seen (0 before it is built)."""
        retriever: Retriever | None = self._built.get("retriever")  # never built just to ask
        dense = retriever.dense if retriever is not None else None
        return int(dense.seq) if dense is not None else 0

    def sync_dense(self, full: bool = False) -> None:
        """Pull new vectors into the dense index, if the retriever is built (blocking)."""
        retriever: Retriever | None = self._built.get("retriever")
        if retriever is not None:
            retriever.sync_dense(full)

    # --- language models and answers ------------------------------------------------

    def llm(self, name: str | None = None) -> LLM:
        """The LLM backend by name (default: settings.llm), created once per runtime."""
        from townsquare.llm import LLMS

        key = name or self.settings.llm
        with self._locks["llm"]:
            if key not in self._llms:
                llm = LLMS.create(key, self.settings)
                if key == "openai":
                    from townsquare.llm.limiter import ConcurrencyLimitedLLM

                    llm = ConcurrencyLimitedLLM(llm, self.settings.llm_max_concurrency)
                self._llms[key] = llm
            return self._llms[key]

    def new_engine(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        policy: Policy | None = None,
        trending: Callable[[], list[Post]] | None = None,
        llm: LLM | None = None,
    ) -> AnswerEngine:
        """An answer engine over this runtime's parts (building it may load the LLM).

        Its LLMs count the tokens of each HTTP request that uses them
        (:class:`~townsquare.llm.metering.MeteredLLM`; outside a request they
        count nothing). ``clock`` answers "as of" another time (``trends
        --at``); ``trending`` gives it the current top trends' posts; ``llm``
        replaces the configured one (the eval shares one loaded model across sets).
        """
        from townsquare.answer import AnswerEngine
        from townsquare.answer.personas import Personas
        from townsquare.answer.policy import Policy
        from townsquare.llm.metering import MeteredLLM

        return AnswerEngine(
            self.retriever,
            MeteredLLM(llm or self.llm()),
            self.store,
            Personas.load(self.settings.personas_dir),
            policy or Policy(),
            clock=clock or utcnow,
            llms=lambda name: MeteredLLM(self.llm(name)),
            trending=trending,
            style=self.settings.answer_style,
        )

    @property
    def engine(self) -> AnswerEngine:
        """The runtime's answer engine, built once."""
        return self._once("engine", self.new_engine)

    def build_trends(
        self, now: datetime | None = None, history: timedelta = timedelta(hours=24),
    ) -> TrendEngine:
        """A trend engine fed the store's recent posts (blocking).

        With ``now`` its windows replay up to that time; without it they end
        at the wall clock (a server's: when a stream goes quiet, the last hour
        empties instead of showing an old hour as current).
        """
        from townsquare.trends import TrendEngine
        from townsquare.trends.detector import TrendDetector

        if now is not None:
            return TrendEngine.from_store(self.store, now, history=history)
        return TrendEngine.from_store(self.store, datetime.now(UTC), history=history,
                                      detector=TrendDetector(clock=utcnow))

    def close(self) -> None:
        store: Store | None = self._built.get("store")
        if store is not None:
            store.close()


class Live:
    """A serving process's running parts around a :class:`Runtime`, wired once.

    ``supervisor`` ingests this process's sources (none: a read replica);
    ``engine`` replaces the answer engine built from the runtime (tests pass
    one with their own policy); ``trends`` turns the trend engine and the
    story loop on; ``on_posts`` are extra listeners of every committed post
    (the app's search cache).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        supervisor: Supervisor | None = None,
        engine: AnswerEngine | None = None,
        trends: bool = True,
        on_posts: Sequence[Listener] = (),
    ) -> None:
        self.runtime = runtime
        self.supervisor = supervisor
        self.trends_enabled = trends
        #: Every committed post, from this process's sources or another process's ingest.
        self.feed = PostFeed(runtime.store)
        if supervisor is not None:
            supervisor.add_listener(self.feed.heard)
        for listener in on_posts:
            self.feed.add_listener(listener)
        self.watches = _watch_hub(runtime)
        self.feed.add_listener(self.watches.listener)
        #: The trend engine: ``None`` until it has warmed up from the store.
        self.trends: TrendEngine | None = None
        self.story_loop: StoryLoop | None = None
        self._engine = engine
        self._summarizer: StorySummarizer | None = None
        self._lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # --- answers ------------------------------------------------------------------

    @property
    def engine(self) -> AnswerEngine:
        """The answer engine, built once (blocking: it may load an LLM)."""
        with self._lock:
            if self._engine is None:
                self._engine = self.runtime.new_engine(trending=self.trend_samples)
            return self._engine

    async def aengine(self) -> AnswerEngine:
        """:attr:`engine`, built off the event loop the first time."""
        if self._engine is not None:
            return self._engine
        return await asyncio.to_thread(lambda: self.engine)

    async def summarizer(self) -> StorySummarizer:
        """The shared story summarizer, over the answer engine."""
        from townsquare.answer.summaries import StorySummarizer

        engine = await self.aengine()
        with self._lock:
            if self._summarizer is None:
                self._summarizer = StorySummarizer(engine)
            return self._summarizer

    def trend_samples(self, limit: int = 5) -> list[Post]:
        """One sample post of each of the top trends of the last hour (none while warming).

        Read back from the store (blocking), so a post deleted since the trend
        engine counted it is never cited.
        """
        trends = self.trends
        if trends is None:
            return []
        out = []
        for trend in trends.trends("1h", limit):
            for pid in trend.sample_ids[:1]:
                post = self.runtime.store.get_post(pid)
                if post is not None:
                    out.append(post)
        return out

    # --- background work ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks (the API serves meanwhile)."""
        settings = self.runtime.settings

        def task(coro: Coroutine[Any, Any, None], name: str) -> None:
            self._tasks.append(asyncio.create_task(coro, name=name))

        task(self._start_background(), "start-background")
        task(self.feed.run(), "live-feed")
        if self.trends_enabled and settings.story_refresh_s > 0:
            task(self._run_story_loop(settings.story_refresh_s), "story-loop")
        lookup = self._identity_lookup()
        if lookup is not None:
            task(lookup.run(), "identity-lookup")

    async def stop(self) -> None:
        for running in self._tasks:
            running.cancel()
        for running in self._tasks:
            with suppress(asyncio.CancelledError, Exception):
                await running
        self._tasks.clear()
        if self.supervisor is not None:
            await self.supervisor.stop()
        await asyncio.to_thread(self.watches.close)

    async def warm_trends(self) -> TrendEngine:
        """Build the trend engine from the store, then feed it every committed post."""
        engine = await asyncio.to_thread(self.runtime.build_trends)

        def listener(posts: list[Post], deleted: list[str]) -> None:
            engine.add_many(posts)
            if deleted:
                engine.forget(deleted)

        # Through the live feed: posts another process's ingest commits count too (the
        # engine counts a post once, so those it just loaded are not doubled).
        self.feed.add_listener(listener)
        self.trends = engine
        return engine

    async def _start_background(self) -> None:
        """Warm the trends up, load the embedder and dense index, start ingesting, follow.

        All of it after the server is listening (a first start may spend a
        minute distilling the embedder).
        """
        runtime = self.runtime
        if self.trends_enabled:  # first: it needs no model, and must hear posts before ingest
            try:
                await self.warm_trends()
            except Exception:
                log.exception("trends unavailable; /v1/trends and /v1/stories will answer 503")
        if runtime.settings.embedder != "none":
            try:
                retriever = await asyncio.to_thread(lambda: runtime.retriever)
                await asyncio.to_thread(retriever.sync_dense, True)
            except Exception:
                log.exception("could not load the embedder or the dense index")
        if self.supervisor is not None:
            await self.supervisor.start()
        await self._follow_dense()

    async def _follow_dense(self, every_s: float = 0.2) -> None:
        """Keep pulling new vectors into the dense index in the background.

        Searches then find the index current, and the search cache sees
        vectors written by any process even while every request is a hit.
        """
        if self.runtime.settings.embedder == "none":
            return
        try:
            while True:
                await asyncio.sleep(every_s)
                await asyncio.to_thread(self.runtime.sync_dense)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dense index follower stopped; searches still sync on their own")

    def new_story_loop(self, every_s: float, summaries: int) -> StoryLoop:
        """A story loop over the warm trend engine, this summarizer and watch hub."""
        from townsquare.trends.story_loop import StoryLoop

        assert self.trends is not None, "the trend engine is still warming up"
        return StoryLoop(self.trends, self.summarizer, self.watches, every_s, summaries)

    async def _run_story_loop(self, every_s: float) -> None:
        """Once the trend engine is warm: keep stories summarized and story watches told."""
        while self.trends is None:
            await asyncio.sleep(min(1.0, every_s))
        summaries = max(0, self.runtime.settings.story_summaries)
        self.story_loop = self.new_story_loop(every_s, summaries)
        await self.story_loop.run()

    def _identity_lookup(self) -> IdentityLookup | None:
        """The Bluesky handle lookup, when the settings and the running sources want it."""
        from townsquare.ingest.identity import IdentityLookup, lookup_wanted

        settings = self.runtime.settings
        kinds = [s.kind for s in self.supervisor.statuses()] if self.supervisor else []
        if not lookup_wanted(settings.identity_lookup, kinds):
            return None
        return IdentityLookup(self.runtime.store, settings.identity_lookup_url)


# --- the watch hub -------------------------------------------------------------------


def _watch_hub(runtime: Runtime) -> WatchHub:
    """The standing-query hub on the store: saved watches, their webhooks, revoked keys'
    watches idle, an old ``<home>/watches.json`` imported once."""
    from townsquare.watches import open_hub

    settings = runtime.settings
    return open_hub(runtime.store, settings.home, settings.webhook_allow)
