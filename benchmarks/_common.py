"""Shared helpers for the benchmark scripts: post generation, tables, RSS, a server."""

from __future__ import annotations

import json
import random
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

_TOPICS = {
    "transit": "train strike metro station delay cancelled commuters platform rail union",
    "weather": "storm snow rain flood heatwave forecast wind warning temperature cold",
    "tech": "release bug update phone laptop chip software outage server launch",
    "sports": "match goal team coach league final score player injury transfer",
    "politics": "vote election minister parliament bill debate policy campaign poll law",
    "food": "recipe restaurant coffee bread cheese dinner market chef lunch bakery",
    "fr": "grève train métro école élection pluie orage marché fromage équipe",
}
_FILLER = "the a is on at with about just really now today again finally new big".split()


def generate_posts(n: int, span_days: float = 30.0, seed: int = 7,
                   end: datetime | None = None) -> Iterator[dict[str, object]]:
    """Deterministic synthetic posts spread evenly over ``span_days`` ending ``end``."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    start = end - timedelta(days=span_days)
    step = (end - start) / max(n, 1)
    topics = list(_TOPICS.items())
    for i in range(n):
        name, words = topics[rng.randrange(len(topics))]
        vocab = words.split()
        toks = [rng.choice(vocab) for _ in range(rng.randint(4, 12))]
        toks += rng.sample(_FILLER, 3)
        rng.shuffle(toks)
        text = " ".join(toks)
        if rng.random() < 0.2:
            text += f" #{rng.choice(vocab)}"
        yield {
            "id": f"g{i}",
            "author": f"user{rng.randrange(5000)}",
            "text": text,
            "created_at": (start + step * i).isoformat(),
            "lang": "fr" if name == "fr" else "en",
        }


def write_posts(path: Path, n: int, **kw: object) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for rec in generate_posts(n, **kw):  # type: ignore[arg-type]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(title: str, headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        lines.append("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:,.1f}" if abs(c) >= 10 else f"{c:,.2f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


#: What `serve` prints once it listens: the base URL (the key is in <home>/web-key).
URL_RE = re.compile(r"Open (http://[^/\s]+)/")


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[str]

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) of the server process, from /proc."""
        fields: dict[str, float] = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    fields[name] = float(value.split()[0]) / 1024
        except OSError:
            pass
        return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


@contextmanager
def serve(home: Path, env: dict[str, str], log_level: str = "warning") -> Iterator[Server]:
    """``townsquare serve --no-ingest`` on a free loopback port, answering /healthz."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "townsquare", "--home", str(home), "serve", "--port", "0",
         "--no-ingest", "--log-level", log_level],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        base = None
        for line in proc.stdout:
            m = URL_RE.search(line)
            if m:
                base = m.group(1)
                break
        if base is None:
            raise SystemExit("server did not start")
        for _ in range(200):
            try:
                httpx.get(base + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield Server(base, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
