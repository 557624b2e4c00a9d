"""What a running search shows: a live panel at a terminal, plain lines in logs (CI, `| tee`).

The search reports typed events (nas.engine.events: opened, rejected, started, epoch, ended, requeued); this view turns them into
what a person wants to know: trials finished of those wanted with the time spent and left, what each running
trial is and how far it got (a retry: which trial it retries), and how many sampled points were refused before training
and why, in the words of nas.engine.endings.ENDINGS. At a terminal the panel is
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

from nas.engine.endings import ENDINGS, ended_words, proposed_words, refused_words, stopped_ending
from nas.engine.events import EpochEnded, Rejected, SearchOpened, StorageFault, TrialEnded, TrialRequeued, TrialStarted, dispatch
from nas.engine.record import Status
from nas.front.pareto import summary

# the words of nas.engine.endings.ENDINGS, kept importable here for code written against this module
rejected_words = refused_words
__all__ = ["SearchView", "clock", "ended_words", "proposed_words", "refused_words", "rejected_words", "finished_key"]


def finished_key(status: str, reason: str | None) -> str:
    """The ENDINGS key of a trial the search told finished: its status, and for a stopped one who stopped it."""
    if status == Status.STOPPED:
        return stopped_ending(reason)
    return status if status in ENDINGS else "failed"


def finished_words(key: str, e: TrialEnded, epochs: int) -> str:
    """`stopped early by the scheduler (pareto-asha) after epoch 1 of 3, accuracy 0.9123`: one trial as it ended."""
    acc = f", accuracy {e.acc:.4f}" if e.acc is not None else ""
    if key == "failed":
        return f"{ENDINGS[key].words}: {e.reason}"
    if key == "trained":
        return ENDINGS[key].words + acc
    by = f" ({e.reason})" if key == "stopped_scheduler" and e.reason else ""
    when = f" after epoch {e.epoch} of {epochs}{acc}" if e.epoch and acc else " before its first epoch ended (no accuracy)"
    return ENDINGS[key].words + by + when


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
    retry_of: int | None = None  # the trial cut short whose network this one trains again


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
        self._dispatch = dispatch({SearchOpened: self._opened, Rejected: self._rejected, TrialStarted: self._started,
                                   TrialRequeued: self._requeued, StorageFault: self._storage_fault, EpochEnded: self._epoch,
                                   TrialEnded: self._ended})

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

    def __call__(self, event: Any) -> None:
        """One event of the search (nas.engine.events)."""
        self._dispatch(event)

    def _opened(self, e: SearchOpened) -> None:
        self.wanted = e.remaining

    def _rejected(self, e: Rejected) -> None:
        self.rejected[e.reason] = self.rejected.get(e.reason, 0) + 1

    def _started(self, e: TrialStarted) -> None:
        running = Running(e.number, summary(e.config), e.flops / 1e9, retry_of=e.retry_of)
        self.running[e.number] = running
        self.proposed[e.proposed_by] = self.proposed.get(e.proposed_by, 0) + 1
        if not self._live:
            self._line(f"  trial {e.number:>3} started{self._retry(running)}: {running.summary}, {e.flops / 1e9:.2f} GFLOPs "
                       f"(refused before training so far: {refused_words(self.rejected)})")

    def _requeued(self, e: TrialRequeued) -> None:  # its Ray worker died: its network trains again (nas.engine.bridge)
        self.running.pop(e.number, None)
        self._line(f"trial {e.number:>3} {ENDINGS['cut_short'].words} ({e.reason}): its network is queued to train again"
                   + (f"; Ray's report: {e.ray_log}" if e.ray_log else ""))

    def _storage_fault(self, e: StorageFault) -> None:
        self._line(f"storage: {e.reason} (heartbeats retried each interval; trials keep training)")

    def _epoch(self, e: EpochEnded) -> None:
        if e.acc is None:
            return
        self.best = max(self.best, e.acc)
        trial = self.running.get(e.number)
        if trial:
            trial.epoch, trial.accuracy = e.epoch, e.acc
        if not self._live:
            self._line(f"  trial {e.number:>3}  epoch {e.epoch}/{self.epochs}  acc {e.acc:.4f}  (best so far {self.best:.4f})")

    def _ended(self, e: TrialEnded) -> None:
        running = self.running.pop(e.number, None)
        key = finished_key(e.status, e.reason)
        self.ended[key] = self.ended.get(key, 0) + 1
        self._line(f"trial {e.number:>3} {finished_words(key, e, self.epochs)}{self._retry(running, ';')}  "
                   f"({self.finished} of {self.wanted} finished, {clock(self.elapsed)})")

    @staticmethod
    def _retry(running: Running | None, lead: str = "") -> str:
        """` (a retry of trial 5)`: which trial a retry belongs to."""
        if running is None or running.retry_of is None:
            return ""
        return f"{lead} a retry of trial {running.retry_of}" if lead else f" (a retry of trial {running.retry_of})"

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
        rejected = Text(f"networks chosen {proposed_words(self.proposed)}; refused before training: "
                        f"{refused_words(self.rejected)}", style="dim")
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
            retry = f"a retry of trial {t.retry_of}: " if t.retry_of is not None else ""
            table.add_row(Text(str(t.number), style=ENDINGS["running"].colour), f"{t.gflops:.2f}", f"{t.epoch}/{self.epochs}", accuracy,
                          retry + t.summary)
        return Group(head, rejected, table)
