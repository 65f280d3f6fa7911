"""``SearchFilters`` as SQL predicates on alias ``p``, for both engines.

The same predicate :meth:`SearchFilters.matches` applies in memory, so a
filtered search means the same thing whichever engine ran it.
"""

from __future__ import annotations

from typing import Any

from townsquare.store.records import SearchFilters, normalize_domain
from townsquare.store.sql.dialect import Dialect


def filter_sql(f: SearchFilters, d: Dialect) -> tuple[list[str], list[Any]]:
    """Rendered SQL predicates for the filters, and their parameters (in order)."""
    where, params = _predicates(f, d)
    return [d.sql(w) for w in where], params


def _predicates(f: SearchFilters, d: Dialect) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        where.append("p.{created} >= ?")
        params.append(d.time(f.since))
    if f.until is not None:
        where.append("p.{created} <= ?")
        params.append(d.time(f.until))
    if f.authors:
        names = [a.lower().lstrip("@") for a in f.authors]
        marks = ",".join("?" * len(names))
        where.append(f"(lower(p.author) IN ({marks}) OR lower(p.author_id) IN ({marks}))")
        params += names + names
    if f.exclude_authors:
        names = [a.lower().lstrip("@") for a in f.exclude_authors]
        marks = ",".join("?" * len(names))
        where.append(f"lower(p.author) NOT IN ({marks}) AND lower(p.author_id) NOT IN ({marks})")
        params += names + names
    if f.sources:
        where.append(f"p.source IN ({','.join('?' * len(f.sources))})")
        params += list(f.sources)
    if f.langs:
        where.append(f"p.lang IN ({','.join('?' * len(f.langs))})")
        params += list(f.langs)
    for tag in f.hashtags:
        where.append("(' ' || p.hashtags || ' ') LIKE ? ESCAPE '\\'")
        params.append(f"% {_like(tag.lower().lstrip('#'))} %")
    for domains, neg in ((f.domains, ""), (f.exclude_domains, "NOT ")):
        if domains:
            names = [normalize_domain(d) for d in domains]
            tests = ["({host} = ? OR {host} LIKE ? ESCAPE '\\')" for _ in names]
            where.append(f"{neg}(" + " OR ".join(tests) + ")")
            for name in names:
                params += [name, "%." + _like(name)]
    if f.min_likes is not None:
        where.append("{likes} >= ?")
        params.append(f.min_likes)
    if f.scopes:
        alternatives = []
        for scope in f.scopes:
            sub, sub_params = _predicates(scope, d)
            alternatives.append("(" + (" AND ".join(sub) or "1 = 1") + ")")
            params += sub_params
        where.append("(" + " OR ".join(alternatives) + ")")
    return where, params


def _like(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (escape character ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
