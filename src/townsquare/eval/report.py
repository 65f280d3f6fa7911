"""The eval's table and JSON: one row per question, then the totals against the targets.

Totals are micro-averages (supported sentences over all scored sentences,
facts found over all gold facts), so a long answer weighs more than a short
one, as it does for a reader. The targets are issue 11's, for the embedded
model on the project's own set.
"""

from __future__ import annotations

import platform
import statistics
from datetime import UTC, datetime
from typing import Any

from townsquare.eval.runner import EvalRun, Result

#: Summary key -> the target it must meet ("op bound").
TARGETS: dict[str, str] = {
    "supported_share": ">= 0.95",
    "quotes_bad": "== 0",
    "repeated": "== 0",
    "lang_share": ">= 0.95",
    "latest_share": "== 1.0",
    "fact_recall": ">= 0.80",
    "ttft_median_s": "<= 1.5",
}


def _share(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def summarize(results: list[Result]) -> dict[str, Any]:
    scores = [r.score for r in results]
    scored = sum(s.scored for s in scores)
    supported = sum(s.supported for s in scores)
    facts = sum(s.facts_total for s in scores)
    found = sum(s.facts_found for s in scores)
    latest = [s.latest_ok for s in scores if s.latest_ok is not None]
    langs = [s.lang_ok for s in scores if s.lang_ok is not None]
    ttfts = [s.ttft_s for s in scores if s.ttft_s is not None]
    totals = [s.total_s for s in scores if s.total_s is not None]
    return {
        "answers": len(results),
        "errors": sum(1 for r in results if r.error),
        "sentences": scored,
        "supported": supported,
        "supported_share": _share(supported, scored),
        "quotes": sum(len(s.quotes) for s in scores),
        "quotes_altered": sum(s.altered for s in scores),
        "quotes_misattributed": sum(s.misattributed for s in scores),
        "quotes_bad": sum(s.altered + s.misattributed for s in scores),
        "facts": facts,
        "facts_found": found,
        "fact_recall": _share(found, facts),
        "forbidden_asserted": sum(len(s.forbidden_asserted) for s in scores),
        "latest_questions": len(latest),
        "latest_ok": sum(latest),
        "latest_share": _share(sum(latest), len(latest)),
        "lang_checked": len(langs),
        "lang_ok": sum(1 for ok in langs if ok),
        "lang_share": _share(sum(1 for ok in langs if ok), len(langs)),
        "repeated": sum(s.repeated for s in scores),
        "ttft_median_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_max_s": round(max(ttfts), 3) if ttfts else None,
        "total_median_s": round(statistics.median(totals), 3) if totals else None,
        "total_max_s": round(max(totals), 3) if totals else None,
    }


def target_status(summary: dict[str, Any]) -> dict[str, bool | None]:
    """Each target met (True), missed (False) or not measured (None)."""
    out: dict[str, bool | None] = {}
    for key, rule in TARGETS.items():
        value = summary.get(key)
        op, _, bound = rule.partition(" ")
        if value is None:
            out[key] = None
            continue
        b = float(bound)
        out[key] = {">=": value >= b, "<=": value <= b, "==": value == b}[op]
    return out


def to_json(run: EvalRun) -> dict[str, Any]:
    summary = summarize(run.results)
    return {
        "backend": run.backend,
        "model": run.model,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "summary": summary,
        "targets": {k: {"rule": TARGETS[k], "met": ok}
                    for k, ok in target_status(summary).items()},
        "sets": sorted({r.set_name for r in run.results}),
        "notes": run.notes,
        "results": [r.to_dict() for r in run.results],
    }


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(run: EvalRun) -> str:
    headers = ["question", "lang", "supported", "quotes bad", "facts", "forbidden", "latest",
               "repeated", "ttft s", "total s"]
    rows: list[list[str]] = []
    for r in run.results:
        s = r.score
        lang = "-" if s.lang_expected is None else (
            f"{s.lang_expected}" if s.lang_ok else f"{s.lang_expected}->{s.lang_detected or '?'}"
        )
        rows.append([
            f"{r.set_name}/{r.question_id}" + (" (error)" if r.error else ""),
            lang,
            f"{s.supported}/{s.scored}",
            f"{s.altered + s.misattributed}/{len(s.quotes)}",
            f"{s.facts_found}/{s.facts_total}",
            str(len(s.forbidden_asserted)),
            _cell(s.latest_ok),
            str(s.repeated),
            _cell(s.ttft_s),
            _cell(s.total_s),
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = [f"Answer quality · backend {run.backend} · model {run.model}"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ))
    lines.append("")
    lines.append(summary_table(summarize(run.results)))
    lines.extend(f"note: {n}" for n in run.notes)
    return "\n".join(lines)


def summary_table(summary: dict[str, Any]) -> str:
    status = target_status(summary)

    def mark(key: str) -> str:
        ok = status.get(key)
        return "" if ok is None else ("  ok" if ok else f"  MISSED (target {TARGETS[key]})")

    s = summary
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    failed = f" ({s['errors']} failed)" if s["errors"] else ""
    lines = [
        f"answers                {s['answers']}{failed}",
        f"supported sentences    {s['supported']}/{s['sentences']} = "
        f"{pct(s['supported_share'])}{mark('supported_share')}",
        f"quotes altered/misattr {s['quotes_altered']}/{s['quotes_misattributed']} "
        f"of {s['quotes']}{mark('quotes_bad')}",
        f"fact recall            {s['facts_found']}/{s['facts']} = "
        f"{pct(s['fact_recall'])}{mark('fact_recall')}",
        f"forbidden claims       {s['forbidden_asserted']}",
        f"newest cited first     {s['latest_ok']}/{s['latest_questions']}{mark('latest_share')}",
        f"answer language        {s['lang_ok']}/{s['lang_checked']} = "
        f"{pct(s['lang_share'])}{mark('lang_share')}",
        f"repeated sentences     {s['repeated']}{mark('repeated')}",
        f"time to first token    median {_cell(s['ttft_median_s'])} s, "
        f"max {_cell(s['ttft_max_s'])} s{mark('ttft_median_s')}",
        f"total time             median {_cell(s['total_median_s'])} s, "
        f"max {_cell(s['total_max_s'])} s",
    ]
    return "\n".join(lines)
