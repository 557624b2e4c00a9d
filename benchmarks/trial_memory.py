"""Peak memory of a command's processes, e.g. a search's driver and its Ray trial workers (Linux: reads /proc).

For each process of the command's tree, sampled every 0.2 s: peak RSS (the kernel's VmHWM), peak private memory
(RssAnon: what that process alone holds) and peak PSS (shared pages, such as the memory-mapped image cache, split
between the processes that map them, so that the sum over processes is what the machine holds). A trial worker is a
process whose title once held `--match` (default Ray's trainable, `ray::ImplicitFunc...`); the peak of the trial workers' PSS summed at
each sample is what N concurrent trials hold together.

By hand from /proc: psutil is no dependency of this project, and /proc gives VmHWM, which psutil does not.

Usage: python benchmarks/trial_memory.py [--match TITLE] -- python cli.py search --budget 1G --trials 6 --data /tmp/digits
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

KIB = 1024


def children() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return parents


def tree(root: int) -> list[int]:
    """`root` and its descendants."""
    parents, found, todo = children(), [root], [root]
    while todo:
        pid = todo.pop()
        kids = [p for p, parent in parents.items() if parent == pid]
        found += kids
        todo += kids
    return found


def sample(pid: int) -> dict[str, object] | None:
    """The process's title and memory (bytes), or None when it is gone."""
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, ValueError):
        return None
    pss = next((int(line.split()[1]) for line in rollup if line.startswith("Pss:")), 0)
    kib = {k: int(status[k].split()[0]) if k in status else 0 for k in ("VmHWM", "RssAnon", "RssFile")}
    return {"title": title, "hwm": kib["VmHWM"] * KIB, "anon": kib["RssAnon"] * KIB, "file": kib["RssFile"] * KIB, "pss": pss * KIB}


def main() -> None:
    split = sys.argv.index("--")
    options, command = sys.argv[1:split], sys.argv[split + 1:]
    match = options[options.index("--match") + 1] if "--match" in options else "ImplicitFunc"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    peaks: dict[int, dict[str, object]] = {}
    together = 0
    while process.poll() is None:
        concurrent = 0
        for pid in tree(process.pid):
            now = sample(pid)
            if now is None:
                continue
            peak = peaks.setdefault(pid, {"title": now["title"], "trial": False, "hwm": 0, "anon": 0, "file": 0, "pss": 0})
            peak["trial"] = peak["trial"] or match in str(now["title"])
            for key in ("hwm", "anon", "file", "pss"):
                peak[key] = max(peak[key], now[key])
            if match in str(now["title"]):
                concurrent += now["pss"]
        together = max(together, concurrent)
        time.sleep(0.2)
    gib = 1 / 2**30
    driver = peaks.get(process.pid)
    trials = [p for p in peaks.values() if p["trial"]]
    print(f"exit {process.returncode}; machine: {os.cpu_count()} cpus")
    if driver:
        print(f"driver: peak RSS {driver['hwm'] * gib:.2f} GiB, private {driver['anon'] * gib:.2f} GiB, PSS {driver['pss'] * gib:.2f} GiB")
    for i, p in enumerate(trials):
        print(f"trial worker {i}: peak RSS {p['hwm'] * gib:.2f} GiB (private {p['anon'] * gib:.2f}, file-backed {p['file'] * gib:.2f}), "
              f"PSS {p['pss'] * gib:.2f} GiB")
    print(f"trial workers at once: peak summed PSS {together * gib:.2f} GiB; whole tree peak RSS summed over processes "
          f"{sum(p['hwm'] for p in peaks.values()) * gib:.2f} GiB ({len(peaks)} processes)")


if __name__ == "__main__":
    main()
