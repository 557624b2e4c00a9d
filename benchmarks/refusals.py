"""How long a careless command line takes to be refused, against `convspace --help` (the interpreter's and the CLI's
start-up) measured in the same run: the brief promises one line within 2 s, before torch, Ray or timm is imported.

Each case runs as a fresh process in an empty temporary folder (as a user types it), `--repeat` times; the median is
shown with its ratio to the --help median. Cases that need a study (a settings mismatch, `export` of a missing study)
get one made first by a one-trial search with a tiny proxy.

Usage: python benchmarks/refusals.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "--help (reference)": ["--help"],
    "train --model convnext_tny": ["train", "--model", "convnext_tny"],
    "ablation <a binary file>": ["ablation", sys.executable],
    "search --budget 4.5 (no unit)": ["search", "--budget", "4.5"],
    "search --study ../etc/evil": ["search", "--budget", "1G", "--study", "../etc/evil"],
    "search --storage sqlite:////nonexistent/x.db": ["search", "--budget", "1G", "--storage", "sqlite:////nonexistent/x.db"],
    "search --cpus-per-trial 4096": ["search", "--budget", "1G", "--cpus-per-trial", "4096"],
    "export --study nope --best": ["export", "--study", "nope", "--best"],
    "dashboard --port 99999": ["dashboard", "--port", "99999"],
    "search on a study made with another budget": ["search", "--budget", "3GFLOPs", "--study", "made"],
}


def made_study(folder: Path) -> None:
    """A study `made` with a 4.5-GFLOPs budget, left by a one-trial search (a few seconds of training)."""
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "search", "--budget", "4.5GFLOPs", "--study", "made", "--trials", "1",
                    "--epochs", "1", "--train-images", "64", "--no-warm-start", "--scheduler", "none"], cwd=folder,
                   capture_output=True, timeout=600, check=True)


def timed(args: list[str], cwd: Path) -> tuple[float, int, str]:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    return time.perf_counter() - started, run.returncode, (run.stderr.strip().splitlines() or [""])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        made_study(folder)
        reference = None
        for name, args in CASES.items():
            runs = [timed(args, folder) for _ in range(repeat)]
            median = statistics.median(t for t, _, _ in runs)
            reference = reference or median
            code, said = runs[0][1], runs[0][2]
            print(f"{name:46s} {median:5.2f} s  x{median / reference:4.1f}  exit {code}  {said[:70]}")


if __name__ == "__main__":
    main()
