"""Query understanding: a question (and the conversation so far) into a search.

Three things happen before retrieval, all rule-based and instant (a 135M
model rewriting queries would be slower and worse):

1. **Time phrases become a time window.** English and French relative times
   ("today", "yesterday", "in the last hour", "past 3 days", "this week",
   "aujourd'hui", "hier", "depuis deux heures", "cette semaine", "la semaine
   dernière", "les 24 dernières heures"...) set ``since``/``until`` and are
   removed from the search text, since "today" is not a word posts contain.
   Calendar words ("today", "this week") use UTC day and ISO week boundaries.
2. **@handles and #hashtags become filters.** ``@alice`` means "posts by
   alice" (an author filter) unless it is the topic ("about @alice",
   "mentioning @alice", "sur @alice"), in which case it stays a search term.
   ``#tag`` filters on the hashtag and is also kept as a search word.
3. **Names of speakers become authors.** "what does Dupont say about the
   strike?", "que pense Mélenchon de ...", "posts by jean dupont", "who is
   @x?" name the account that speaks, not the topic: the name (case and
   accents folded, display names and handle fragments) is looked up in the
   author directory; one account matching every word becomes an author
   filter, several become a ranking boost. A name in topic position ("what
   are people saying about Macron?") stays a search word, so a post
   *about* someone is never presented as theirs.
4. **"Explain this post <url or id>"** names a post whose thread (parent
   chain, quotes, replies) the engine gives the model (``thread_of``).
5. **Follow-ups are rewritten with the conversation.** "and what about him?",
   "et hier ?", "why?" carry the previous turn's topic and filters; pronouns
   for people resolve to the last person or @handle mentioned. The plan of
   each turn is saved with its message (:meth:`QueryPlan.to_meta`) so the next
   turn does not have to re-derive it.

Filters given explicitly (CLI flags, API fields) always win over ones read
from the question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from townsquare.model import MENTION_RE, extract_hashtags
from townsquare.store.base import SearchFilters, StoredMessage
from townsquare.store.people import Author
from townsquare.text import fold, stop_words
from townsquare.text import words as folded_words
from townsquare.timeutil import parse_time

SearchMode = Literal["auto", "on", "off"]

_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "couple": 2, "few": 3,
    "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "dix": 10,
    "douze": 12, "quelques": 3,
}
_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconde": 1,
    "m": 60, "min": 60, "mn": 60, "minute": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "heure": 3600,
    "d": 86400, "day": 86400, "jour": 86400, "j": 86400,
    "w": 604800, "week": 604800, "semaine": 604800, "sem": 604800,
    "month": 2592000, "mois": 2592000,
}
_UNIT_LABEL = {1: "second", 60: "minute", 3600: "hour", 86400: "day", 604800: "week",
               2592000: "month"}

_NUM = r"(?P<n>\d+|" + "|".join(sorted(_NUMBERS, key=len, reverse=True)) + r")"
_UNIT = (
    r"(?P<u>seconds?|secondes?|secs?|minutes?|mins?|mn|hours?|heures?|hrs?|days?|jours?"
    r"|weeks?|semaines?|months?|mois|[smhdwj])"
)
_E = "[eèé]"  # French words typed with or without accents

Window = tuple[datetime | None, datetime | None, str]
Rule = tuple[re.Pattern[str], Callable[[re.Match[str], datetime], Window]]


def _day(now: datetime, days_back: int = 0) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_back)


def _week(now: datetime, weeks_back: int = 0) -> datetime:
    return _day(now, now.weekday()) - timedelta(weeks=weeks_back)


def _span(m: re.Match[str], now: datetime) -> Window:
    raw = (m.groupdict().get("n") or "1").lower()
    n = int(raw) if raw.isdigit() else _NUMBERS.get(raw, 1)
    unit = m.group("u").lower()
    unit = unit if unit in _UNITS else unit.rstrip("s")
    secs = _UNITS.get(unit, 3600)
    label = _UNIT_LABEL[secs] + ("s" if n != 1 else "")
    text = f" in the last {label}" if n == 1 else f" in the last {n} {label}"
    return now - timedelta(seconds=n * secs), None, text


def _rule(pattern: str, fn: Callable[[re.Match[str], datetime], Window]) -> Rule:
    return re.compile(pattern, re.IGNORECASE), fn


# Order matters: longer, more specific phrases first.
_RULES: list[Rule] = [
    _rule(r"\b(?:since|depuis)\s+yesterday\b|\bdepuis\s+hier\b",
          lambda m, now: (_day(now, 1), None, " since yesterday")),
    _rule(r"\b(?:in|over|during|within|for)?\s*the\s+(?:last|past)\s+" + _NUM + r"\s*" + _UNIT
          + r"\b", _span),
    _rule(r"\b(?:in|over|during|within)\s+(?:the\s+)?(?:last|past)\s+" + _UNIT + r"\b", _span),
    _rule(r"\bthe\s+(?:last|past)\s+(?P<u>minute|hour|day|week|month)\b", _span),
    _rule(r"\b(?:last|past)\s+" + _NUM + r"\s*" + _UNIT + r"\b", _span),
    _rule(r"\b" + _NUM + r"\s*" + _UNIT + r"\s+ago\b", _span),
    _rule(r"\b(?:dans|durant|pendant|sur|depuis|au cours de)?\s*(?:les|ces)\s+" + _NUM + r"\s+"
          + r"derni" + _E + r"r(?:e|es|s)?\s+" + _UNIT + r"\b", _span),
    _rule(r"\b(?:dans|durant|pendant|sur|depuis|au cours de)?\s*(?:les|ces|la)\s+derni" + _E
          + r"r(?:e|es|s)?\s+" + _NUM + r"\s*" + _UNIT + r"\b", _span),
    _rule(r"\b(?:dans|durant|pendant|sur|depuis|au cours de)?\s*(?:la|le)\s+derni" + _E
          + r"r(?:e|es)?\s+(?P<u>minute|heure|jour|semaine|mois)\b", _span),
    _rule(r"\b(?:depuis|il y a)\s+" + _NUM + r"\s*" + _UNIT + r"\b", _span),
    _rule(r"\bces\s+derniers\s+jours\b", lambda m, now: (now - timedelta(days=3), None,
                                                          " in the last few days")),
    _rule(r"\b(?:in\s+)?the\s+(?:last|past)\s+few\s+days\b|\b(?:these\s+)?past\s+few\s+days\b",
          lambda m, now: (now - timedelta(days=3), None, " in the last few days")),
    _rule(r"\blast\s+week\b|\bla\s+semaine\s+(?:derni" + _E + r"re|pass" + _E + r"e)\b",
          lambda m, now: (_week(now, 1), _week(now), " last week")),
    _rule(r"\bthis\s+week\b|\bcette\s+semaine\b",
          lambda m, now: (_week(now), None, " this week")),
    _rule(r"\bthis\s+month\b|\bce\s+mois(?:-ci)?\b",
          lambda m, now: (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), None,
                          " this month")),
    _rule(r"\byesterday\b|\bhier\b",
          lambda m, now: (_day(now, 1), _day(now), " yesterday")),
    _rule(r"\btoday\b|\baujourd['’]?\s?hui\b|\bthis\s+(?:morning|afternoon|evening)\b|\btonight\b"
          r"|\bce\s+(?:matin|soir)\b|\bcet\s+apr" + _E + r"s-?midi\b",
          lambda m, now: (_day(now), None, " today")),
]

# Words that make a short question lean on the previous turn.
_FOLLOWUP_START = re.compile(
    r"^\s*(?:and|but|so|also|what about|how about|what else|any more|more on|"
    r"et|mais|aussi|quid de|et pour|et sur|et avec)\b",
    re.IGNORECASE,
)
_PERSON_PRONOUNS = frozenset(
    "he him his she her hers himself herself il elle lui".split()
)
_PRONOUNS = _PERSON_PRONOUNS | frozenset(
    "they them their it its that this those these there ils elles eux leur ça ca cela ceci "
    "celui celle".split()
)
_SMALL_TALK = re.compile(
    r"^\s*(?:hi|hello|hey|yo|thanks?|thank you|merci|bonjour|salut|coucou|ok(?:ay)?|cool|"
    r"who are you|what are you|what can you do|help|qui es-tu|tu es qui)\s*[!.?]*\s*$",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"[\w'’-]+", re.UNICODE)
_NAME_RE = re.compile(r"\b[A-Z][\w'’-]+(?:\s+[A-Z][\w'’-]+)*")
_TOPIC_BEFORE_HANDLE = re.compile(
    r"(?:about|regarding|mentioning|mention|on|to|re|concerning|sur|concernant|"
    r"à propos de|a propos de|au sujet de|contre|against|with|avec)\s*$",
    re.IGNORECASE,
)
#: Function words and question framing ("what are people saying"): not the topic.
_STOP = stop_words(questions=True)
_NAME_STOP = frozenset(
    "What Who Why When Where How Which Is Are Was Were Do Does Did Can Could Should Would "
    "Will Any Tell Show Give The A An And But So Also I It This That These Those There "
    "Qui Que Quoi Quel Quelle Quels Quelles Comment Pourquoi Quand Où Est Et Mais Le La Les "
    "Un Une Des Il Elle Ils Elles Je On Ce Cette Ces Today Yesterday".split()
)


class Directory(Protocol):
    """What name resolution needs from the author directory (a Store has it)."""

    def find_authors(self, words: Sequence[str], limit: int = 20) -> list[tuple[Author, int]]:
        ...

    def get_author(self, key: str) -> Author | None: ...


_VERBS = (r"(?:say|said|saying|says|think|thinks|thinking|thought|post|posted|posting|posts|"
          r"write|wrote|writing|writes|tweet|tweeted|tweeting|claim|claimed|claims|claiming|"
          r"report|reported|reporting|reports|argue|argued|argues|mean|means|feel|feels)")
_SPEAKER_RULES = [
    re.compile(r"\b(?:what|how|why)\s+(?:does|did|do|is|are|was|has|have|had)\s+"
               r"(?P<who>[^?!,;]{2,60}?)\s+" + _VERBS + r"\b", re.IGNORECASE),
    re.compile(r"\b(?:posts?|tweets?|views?|opinions?|takes?|thoughts?|words|statements?|"
               r"messages?)\s+(?:by|from|of)\s+(?P<who>[^?!,;]{2,60}?)"
               r"(?=\s+(?:on|about|regarding|concerning|sur|today|yesterday|this|in)\b|[?!.,;]|$)",
               re.IGNORECASE),
    re.compile(r"\baccording\s+to\s+(?P<who>[^?!,;]{2,60}?)"
               r"(?=\s+(?:on|about|regarding|concerning)\b|[?!.,;]|$)", re.IGNORECASE),
    re.compile(r"\b(?:que|qu['’]est-ce\s+que)\s+(?:dit|pense|disent|pensent|a\s+dit|"
               r"[eé]crit|raconte|d[ée]clare)\s+(?P<who>[^?!,;]{2,60}?)"
               r"(?=\s+(?:sur|de|du|des|à|a\s+propos|au\s+sujet|concernant)\b|[?!.,;]|$)",
               re.IGNORECASE),
    re.compile(r"\bqu['’]est-ce\s+que\s+(?P<who>[^?!,;]{2,60}?)\s+(?:dit|pense|a\s+dit|"
               r"[eé]crit|raconte)\b", re.IGNORECASE),
    re.compile(r"\b(?:selon|d['’]apr[eè]s)\s+(?P<who>[^?!,;]{2,60}?)"
               r"(?=\s+(?:sur|concernant)\b|[?!.,;]|$)", re.IGNORECASE),
]
_WHO_IS = re.compile(
    r"^\s*(?:who(?:'s|\s+is|\s+are)|qui\s+est|c['’]est\s+qui)\s+(?P<who>@?[\w.@'’ -]{2,60}?)"
    r"\s*[?!.]*\s*$",
    re.IGNORECASE,
)
#: Words around a name that are not the name (titles, articles, "people").
_NOT_NAME = frozenset(
    """the a an mr mrs ms dr prof president presidente president minister ministre senator
    senateur mayor maire madame monsieur mme mlle m le la les l de du des people folks
    everyone anyone they them he she il elle ils elles on gens""".split()
)
_EXPLAIN = re.compile(
    r"\b(?:explain|explique[rz]?|context(?:e)?\s+(?:of|for|de)|what\s+is\s+this\s+post"
    r"|thread\s+(?:of|for)|summari[sz]e\s+(?:this\s+)?(?:post|thread))\b"
    r".*?(?P<ref>https?://\S+|(?:bluesky|mastodon|rss|jsonl|demo):\S+)",
    re.IGNORECASE,
)


@dataclass(slots=True)
class People:
    """Names in a question resolved against the directory."""

    #: Account ids to filter on (one account matched every word of a name).
    authors: list[str] = field(default_factory=list)
    #: Account ids to rank higher (a name matched several accounts).
    boost: list[str] = field(default_factory=list)
    #: The words of the names that matched (taken out of the search text).
    words: list[str] = field(default_factory=list)


def speaker_names(question: str) -> list[str]:
    """Names in speaker position ("what does X say", "posts by X", "que dit X")."""
    found: dict[str, None] = {}
    for rule in _SPEAKER_RULES:
        for m in rule.finditer(question):
            who = m.group("who").strip()
            if who and not who.startswith(("@", "#")):
                found.setdefault(who, None)
    return list(found)


def resolve_name(name: str, directory: Directory) -> People:
    """One name -> an author filter (one full match) or a boost (several)."""
    parts = [w for w in folded_words(name) if w not in _NOT_NAME and w not in _STOP]
    if not parts or len(parts) > 4:
        return People()
    # Accounts that never posted here (known from identity events only) cannot speak.
    matches = [(a, n) for a, n in directory.find_authors(parts, limit=20) if a.posts > 0]
    full = [a for a, n in matches if n >= len(parts)]
    if len(full) == 1:
        return People(authors=[full[0].id], words=parts)
    if full:
        return People(boost=[a.id for a in full[:10]], words=parts)
    # No account has every word: the last word is the surname most people go by.
    last = [a for a, _ in directory.find_authors(parts[-1:], limit=10) if a.posts > 0]
    if last and len(parts) > 1:
        return People(boost=[a.id for a in last], words=parts)
    return People()


def resolve_people(question: str, directory: Directory) -> People:
    out = People()
    for name in speaker_names(question):
        got = resolve_name(name, directory)
        out.authors += got.authors
        out.boost += got.boost
        out.words += got.words
    return out


def explain_target(question: str) -> str | None:
    """The post an "explain this post <url or id>" question names, as written."""
    m = _EXPLAIN.search(question)
    return m.group("ref").rstrip(").,;!?»\"'") if m else None


def who_is(question: str) -> str | None:
    """The account a "who is @x?" question asks about, as written."""
    m = _WHO_IS.match(question)
    return m.group("who").strip() if m else None


@dataclass(slots=True)
class QueryPlan:
    """What retrieval will be asked, and why (shown with ``--json`` for transparency)."""

    question: str
    search_text: str
    filters: SearchFilters = field(default_factory=SearchFilters)
    #: " in the last hour", " today"... for messages; empty when no time window.
    window: str = ""
    followup: bool = False
    retrieve: bool = True
    #: Authors the question names but not surely (several match): ranked higher.
    boost_authors: list[str] = field(default_factory=list)
    #: The post an "explain this post" question names (a URL or an id, as written).
    thread_of: str | None = None

    def to_meta(self) -> dict[str, Any]:
        f = self.filters
        return {
            "search_text": self.search_text,
            "since": f.since.isoformat() if f.since else None,
            "until": f.until.isoformat() if f.until else None,
            "authors": list(f.authors),
            "hashtags": list(f.hashtags),
            "window": self.window,
            "followup": self.followup,
            "retrieve": self.retrieve,
            "boost_authors": list(self.boost_authors),
            "thread_of": self.thread_of,
        }


def parse_time_phrases(text: str, now: datetime) -> tuple[str, datetime | None, datetime | None,
                                                           str]:
    """Remove relative-time phrases; return (rest, since, until, window label).

    The first phrase found sets the window (questions rarely hold two).
    """
    since: datetime | None = None
    until: datetime | None = None
    label = ""
    for pattern, fn in _RULES:
        m = pattern.search(text)
        if m is None:
            continue
        if not label:
            since, until, label = fn(m, now)
        text = pattern.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip(), since, until, label


def split_handles(text: str) -> tuple[str, list[str], list[str]]:
    """(text without author handles, author handles, topic handles)."""
    authors: list[str] = []
    topics: list[str] = []
    out: list[str] = []
    last = 0
    for m in MENTION_RE.finditer(text):
        handle = m.group(1).rstrip(".-").lower()
        if _TOPIC_BEFORE_HANDLE.search(text[: m.start()]):
            topics.append(handle)
            continue
        authors.append(handle)
        out.append(text[last : m.start()])
        last = m.end()
    out.append(text[last:])
    return re.sub(r"\s+", " ", "".join(out)).strip(), authors, topics


def content_words(text: str) -> list[str]:
    """Words that carry the topic (no stop words, no pronouns), lower-cased, deduplicated."""
    seen: dict[str, None] = {}
    for w in _WORD_RE.findall(text):
        low = w.lower().strip("'’-")
        if low and fold(low) not in _STOP and low not in _PRONOUNS and not low.isdigit():
            seen.setdefault(low, None)
    return list(seen)


def entities(text: str) -> list[str]:
    """People-ish things named in a text: @handles and Capitalised Names, in order."""
    found: dict[str, None] = {}
    for m in MENTION_RE.finditer(text):
        found.setdefault("@" + m.group(1).rstrip(".-").lower(), None)
    for m in _NAME_RE.finditer(re.sub(r"@[\w.\-]+", " ", text)):
        words = [w for w in m.group(0).split() if w not in _NAME_STOP]
        if words:
            found.setdefault(" ".join(words), None)
    return list(found)


def is_followup(question: str, has_history: bool) -> bool:
    if not has_history:
        return False
    if _FOLLOWUP_START.search(question):
        return True
    words = [w.lower() for w in _WORD_RE.findall(question)]
    content = content_words(question)
    if any(w in _PRONOUNS for w in words) and len(content) <= 3:
        return True
    return not content and not MENTION_RE.search(question) and not extract_hashtags(question)


def understand(
    question: str,
    now: datetime,
    explicit: SearchFilters | None = None,
    history: Sequence[StoredMessage] = (),
    search: SearchMode = "auto",
    directory: Directory | None = None,
) -> QueryPlan:
    """Plan the search for ``question`` asked at ``now`` after ``history``.

    ``directory`` (the store) resolves speakers' names to authors; without
    it names stay search words.
    """
    explicit = explicit or SearchFilters()
    thread_of = explain_target(question)
    if thread_of is not None:
        question_text = question.replace(thread_of, " ")
    else:
        question_text = question
    text, since, until, window = parse_time_phrases(question_text, now)
    whois = who_is(text)
    text, author_handles, _topics = split_handles(text)
    if whois is not None and whois.startswith("@") and not author_handles:
        author_handles = [whois[1:].lower()]
    hashtags = extract_hashtags(question_text)
    found = SearchFilters(since=since, until=until, authors=author_handles, hashtags=hashtags)
    people = People()
    if directory is not None and not author_handles:
        if whois is not None:
            people = resolve_name(whois, directory)
        else:
            people = resolve_people(text, directory)
        found.authors = list(people.authors)

    prev_user = next((m for m in reversed(history) if m.role == "user"), None)
    prev_answer = next((m for m in reversed(history) if m.role == "assistant"), None)
    followup = is_followup(question, prev_user is not None)
    named = set(people.words)
    search_words = [w for w in content_words(text.replace("#", " "))
                    if not (named and set(folded_words(w)) <= named)]
    if whois is not None and (found.authors or people.boost):
        search_words = []  # "who is X?": their own recent posts say it best
    if thread_of is not None:
        search_words = [w for w in search_words if w not in _EXPLAIN_WORDS]
    if followup and prev_user is not None:
        prev_plan: dict[str, Any] = prev_user.meta.get("plan") or {}
        words = [w.lower() for w in _WORD_RE.findall(question)]
        if any(w in _PERSON_PRONOUNS for w in words):
            mentioned = entities(prev_user.content) or (
                entities(prev_answer.content) if prev_answer else []
            )
            if mentioned:
                who = mentioned[-1]
                if who.startswith("@") and not found.authors:
                    found.authors = [who[1:]]
                else:
                    search_words += content_words(who)
        previous = prev_plan.get("search_text") or " ".join(content_words(prev_user.content))
        search_words += content_words(previous)
        found = _inherit(found, prev_plan, window)
        window = window or prev_plan.get("window") or ""

    filters = _merge(explicit, found)
    search_text = " ".join(dict.fromkeys(search_words))
    retrieve = search == "on" or (search == "auto" and not _SMALL_TALK.match(question))
    return QueryPlan(
        question=question,
        search_text=search_text,
        filters=filters,
        window=window if not (explicit.since or explicit.until) else "",
        followup=followup,
        retrieve=retrieve,
        boost_authors=list(people.boost),
        thread_of=thread_of,
    )


_EXPLAIN_WORDS = frozenset(
    "explain explique expliquer expliquez post thread context contexte summarize summarise "
    "résume resume".split()
)


def _inherit(found: SearchFilters, prev: dict[str, Any], window: str) -> SearchFilters:
    """A follow-up keeps the previous turn's filters it does not replace."""
    out = replace(found)
    if not window and not found.since and not found.until:
        out.since = parse_time(prev["since"]) if prev.get("since") else None
        out.until = parse_time(prev["until"]) if prev.get("until") else None
    if not found.authors:
        out.authors = list(prev.get("authors") or [])
    if not found.hashtags:
        out.hashtags = list(prev.get("hashtags") or [])
    return out


def _merge(explicit: SearchFilters, found: SearchFilters) -> SearchFilters:
    """Explicit filters win; lists from the question are added to explicit ones."""
    window = explicit if explicit.since or explicit.until else found
    return replace(
        explicit,
        since=window.since,
        until=window.until,
        authors=list(dict.fromkeys([*explicit.authors, *found.authors])),
        exclude_authors=list(explicit.exclude_authors),
        sources=list(explicit.sources),
        langs=list(explicit.langs),
        hashtags=list(dict.fromkeys([*explicit.hashtags, *found.hashtags])),
    )
