"""Screenshots of the web page's landing view for the README (``docs/web-*.png``).

Runs ``townsquare serve --demo`` (the bundled sample stream, offline) in a
scratch home, waits until stories have their summaries, and saves the page
at phone (390 px) and desktop (1280 px) widths with Debian's Chromium:

    python scripts/web_screenshots.py [--out docs] [--llm local] [--wait 120]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

URL_RE = re.compile(r"Open (http://[^/ ]+)/ with the web page's key from (\S+)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs")
    ap.add_argument("--llm", default="local")
    ap.add_argument("--embedder", default="hash")
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait for summaries")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "TOWNSQUARE_HOME": home, "TOWNSQUARE_LLM": args.llm,
               "TOWNSQUARE_EMBEDDER": args.embedder}
        proc = subprocess.Popen(
            [sys.executable, "-m", "townsquare", "serve", "--demo", "--port", "0",
             "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            assert proc.stdout is not None
            match = None
            while match is None:
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit("serve exited before printing its URL")
                match = URL_RE.search(line)
            base = match.group(1)
            key = Path(match.group(2)).read_text(encoding="utf-8").strip()
            headers = {"Authorization": f"Bearer {key}"}
            deadline = time.monotonic() + args.wait
            while time.monotonic() < deadline:
                data = None
                for window in ("1h", "24h"):  # the page shows the day's when the hour is quiet
                    try:
                        data = httpx.get(f"{base}/v1/stories", headers=headers, timeout=120,
                                         params={"summaries": 3, "window": window}
                                         ).json().get("data")
                    except (httpx.HTTPError, ValueError):
                        data = None
                    if data:
                        break
                if data and any(s.get("summary") for s in data):
                    break
                time.sleep(3)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--headless", "--no-sandbox"])
                for width, height in [(1280, 900), (390, 844)]:
                    page = browser.new_page(viewport={"width": width, "height": height},
                                            device_scale_factor=1)
                    page.goto(f"{base}/#key={key}")
                    page.wait_for_selector("#feed-list li.post")
                    page.wait_for_selector("#stories .story-summary", timeout=120_000)
                    time.sleep(2.5)  # a few live posts arrive
                    path = out / f"web-landing-{width}.png"
                    page.screenshot(path=str(path))
                    print(f"wrote {path}")
                    page.close()
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
