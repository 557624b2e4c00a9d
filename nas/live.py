"""What a running search shows: a live panel at a terminal, plain lines in logs (CI, `| tee`).

The search reports events (`start`, `rejected`, `started`, `epoch`, `finished`); this view turns them into
what a person wants to know: trials finished of those wanted with the time spent and left, what each running
trial is and how far it got, and how many sampled points were rejected and why. At a terminal the panel is
redrawn every half second, so the clock moves even while every trial is inside a long epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nas.pareto import summary

ENDED = (("trained", "trained to the end"), ("stopped", "stopped early"), ("failed", "failed"))
REJECTED = {"over_budget": "over budget", "under_band": "under --flops-min", "infeasible": "no scale fits the band",
            "unfit": "too dilated for the proxy resolution", "duplicate": "already evaluated", "surplus": "taken by another driver"}
PROPOSERS = {"sampler": "by the sampler", "warm_start": "warm start", "random": "by random search", "retry": "retries"}


def ended_words(ended: dict[str, int]) -> str:
    """`9 trained to the end, 3 stopped early, 0 failed`: how this run's trials ended."""
    return ", ".join(f"{ended.get(key, 0)} {words}" for key, words in ENDED)


def rejected_words(rejected: dict[str, int]) -> str:
    """`143 over budget, 2 already evaluated` (or `none`): sampled points that were not trained."""
    return ", ".join(f"{n} {REJECTED.get(reason, reason)}" for reason, n in sorted(rejected.items()) if n) or "none"


def proposed_words(proposed: dict[str, int]) -> str:
    """`10 by the sampler, 2 warm start` (or `none`): who chose the networks trained."""
    return ", ".join(f"{n} {PROPOSERS.get(who, who)}" for who, n in sorted(proposed.items(), key=lambda kv: -kv[1]) if n) or "none"


def clock(seconds: float) -> str:
    """`1h02m`, `4m05s`, `12s`."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Running:
    """A trial that is training now."""

    number: int
    summary: str
    gflops: float
    epoch: int = 0
    accuracy: float | None = None


class SearchView:
    """Receives the search's progress events; `live=True` draws a rich panel, else one plain line per event."""

    def __init__(self, console: Console, *, study: str, epochs: int, live: bool, time_budget: float | None = None) -> None:
        self.console, self.study, self.epochs, self.time_budget = console, study, epochs, time_budget
        self.started_at = time.monotonic()
        self.wanted = 0  # trials this run trains (the study may already hold some)
        self.running: dict[int, Running] = {}
        self.ended: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.proposed: dict[str, int] = {}
        self.best = 0.0
        self._live = Live(self, console=console, refresh_per_second=2, transient=True) if live else None

    def __enter__(self) -> SearchView:
        if self._live:
            self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live:
            self._live.stop()

    def _line(self, text: str) -> None:
        """A permanent line: above the panel at a terminal, as it is in a log."""
        self.console.print(text, highlight=False)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        """One event of the search."""
        if event == "start":
            self.wanted = info["remaining"]
        elif event == "rejected":
            self.rejected[info["reason"]] = self.rejected.get(info["reason"], 0) + 1
        elif event == "started":
            self.running[info["number"]] = Running(info["number"], summary(info["config"]), info["flops"] / 1e9)
            who = info.get("proposed_by", "sampler")
            self.proposed[who] = self.proposed.get(who, 0) + 1
            if not self._live:
                self._line(f"  trial {info['number']:>3} started: {self.running[info['number']].summary}, "
                           f"{info['flops'] / 1e9:.2f} GFLOPs ({rejected_words(self.rejected)} rejected so far)")
        elif event == "storage_fault":
            self._line(f"storage: {info['reason']} (heartbeats retried each interval; trials keep training)")
        elif event == "epoch" and info.get("acc") is not None:
            self.best = max(self.best, info["acc"])
            trial = self.running.get(info["number"])
            if trial:
                trial.epoch, trial.accuracy = info["epoch"], info["acc"]
            if not self._live:
                self._line(f"  trial {info['number']:>3}  epoch {info['epoch']}/{self.epochs}  acc {info['acc']:.4f}"
                           f"  (best so far {self.best:.4f})")
        elif event == "finished":
            self.running.pop(info["number"], None)
            self.ended[info["status"]] = self.ended.get(info["status"], 0) + 1
            how = {"trained": "trained to the end", "stopped": f"stopped early after epoch {info['epoch']} ({info['reason']})"}.get(
                info["status"], f"failed: {info['reason']}")
            acc = f", accuracy {info['acc']:.4f}" if info.get("acc") is not None and info["status"] != "failed" else ""
            self._line(f"trial {info['number']:>3} {how}{acc}  ({self.finished} of {self.wanted} finished, {clock(self.elapsed)})")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def finished(self) -> int:
        return sum(self.ended.values())

    def eta(self) -> str:
        """Time left: what remains of --time-budget when one is set (the search ends then, whatever the pace), else an
        estimate at the pace so far (trials finish in parallel, so the pace already counts that), labelled as one."""
        if self.finished >= self.wanted:
            return "all finished"
        if self.time_budget:
            return f"{clock(max(0.0, self.time_budget - self.elapsed))} left of the {clock(self.time_budget)} time budget"
        if not self.finished:
            return "an estimate of the time left after the first trial ends"
        return f"about {clock(self.elapsed / self.finished * (self.wanted - self.finished))} left (estimate at the pace so far)"

    def __rich__(self) -> Group | Text:
        if not self.wanted:
            return Text(f"opening the study, starting Ray ... {clock(self.elapsed)}", style="dim")
        head = Text.assemble(
            (f"{self.study}: ", "bold"), f"{self.finished} of {self.wanted} trials finished ({ended_words(self.ended)}), ",
            f"{clock(self.elapsed)} elapsed, {self.eta()}",
        )
        rejected = Text(f"networks chosen {proposed_words(self.proposed)}; proposals refused before training: "
                        f"{rejected_words(self.rejected)}", style="dim")
        if not self.running:
            return Group(head, rejected, Text("sampling the next points to train ...", style="dim"))
        table = Table(box=None, padding=(0, 1), expand=False)
        table.add_column("trial", justify="right", no_wrap=True)
        table.add_column("GFLOPs", justify="right", no_wrap=True)
        table.add_column("epoch", justify="right", no_wrap=True)
        table.add_column("acc", justify="right", no_wrap=True)
        table.add_column("architecture", overflow="fold")
        for t in sorted(self.running.values(), key=lambda r: r.number):
            accuracy = f"{t.accuracy:.4f}" if t.accuracy is not None else "-"
            table.add_row(str(t.number), f"{t.gflops:.2f}", f"{t.epoch}/{self.epochs}", accuracy, t.summary)
        return Group(head, rejected, table)
