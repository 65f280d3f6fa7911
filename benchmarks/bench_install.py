"""The default install: time and size of a fresh venv with `pip install -e .` (issue #13).

    python benchmarks/bench_install.py [--keep]

Creates a new venv beside nothing else (a temporary folder), upgrades nothing,
installs this checkout with pip (its wheel cache as it is: warm after a first
install, which compiles llama-cpp-python for ~10 minutes), and prints the install
time, the venv's size, its largest packages, and whether torch came in (it must
not: the default install has no deep-learning framework).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table

ROOT = Path(__file__).resolve().parent.parent


def size_mb(path: Path) -> float:
    files = (f for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return sum(f.stat().st_size for f in files) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="leave the venv in place")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ts-install-"))
    venv = tmp / "v"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(ROOT)]
        t0 = time.perf_counter()
        subprocess.run(pip, check=True)
        secs = time.perf_counter() - t0
        site = next((venv / "lib").glob("python3*/site-packages"))
        parts = sorted(((size_mb(p), p.name) for p in site.iterdir() if p.is_dir()
                        and not p.name.endswith((".dist-info", "__pycache__"))), reverse=True)
        has_torch = (site / "torch").exists()
        rows = [["install time, s", f"{secs:.1f}"], ["venv size, MB", f"{size_mb(venv):.0f}"],
                ["torch installed", "yes" if has_torch else "no"]]
        rows += [[f"  {name}", f"{mb:.0f} MB"] for mb, name in parts[:6]]
        print(table("`pip install -e .` into a fresh venv", ["what", "measured"], rows))
    finally:
        if args.keep:
            print(f"venv kept at {venv}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
