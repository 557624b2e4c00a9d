"""What a run tells the command that started it, as it goes: typed progress events and the one way to dispatch them.

The engine (search, confirm, the fixed-network runs) stores every trial itself, then tells its `Progress` callback
what happened; a printer (nas.front.live, console.runs) only prints. An event is a frozen dataclass, so a printer that reads
a field the event lacks fails at once rather than printing `None`, and `dispatch` turns a table of handlers, one per
event type, into the callback: no if-chain on event names anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from space.config import ArchConfig


@dataclass(frozen=True)
class SearchOpened:
    """The search's study is open: `remaining` of its `trials` are still to train; `warm_started`: published networks
    enqueued to train first (a new study only)."""

    remaining: int
    trials: int
    warm_started: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A sampled point was refused before training (stored PRUNED): `reason` is its nas.engine.record.Status."""

    reason: str


@dataclass(frozen=True)
class TrialStarted:
    """A search trial was handed to Ray Tune: its network, its FLOPs, who chose it, and which trial a retry retries."""

    number: int
    config: ArchConfig
    flops: float
    proposed_by: str = "sampler"
    retry_of: int | None = None


@dataclass(frozen=True)
class EpochEnded:
    """A training reported an epoch. `number`: the search trial or the trial `confirm` repeats (Tune's trial id for a
    fixed network); `pid`: the worker process that trains it."""

    number: int | str
    epoch: int | None
    acc: float | None
    seed: int | None = None
    pid: int | None = None


@dataclass(frozen=True)
class TrialEnded:
    """A search trial was told to the study: its nas.engine.record.Status, accuracy, epochs trained, and why it stopped or failed."""

    number: int
    status: str
    acc: float | None
    epoch: int
    reason: str | None = None


@dataclass(frozen=True)
class TrialRequeued:
    """A search trial was cut short (its Ray worker died): failed as interrupted, its network queued to train again."""

    number: int
    reason: str
    ray_log: str | None = None


@dataclass(frozen=True)
class StorageFault:
    """A heartbeat could not reach the storage (told once until one succeeds again); the trials keep training."""

    reason: str


@dataclass(frozen=True)
class ConfirmOpened:
    """`confirm` knows its work: the trials it confirms, the trainings still missing, the seeds asked for."""

    targets: tuple[int, ...]
    runs: int
    seeds: int


@dataclass(frozen=True)
class RunRequeued:
    """A given training (a repeat of `confirm`, a fixed network) lost its Ray worker: handed out once more. `name`: the
    training as its printer names it (`repeat of trial 3 with seed 2`, `resnet50`)."""

    name: str
    reason: str
    ray_log: str | None = None


@dataclass(frozen=True)
class RunEnded:
    """A given training ended, and what it earned is stored: its nas.engine.record.Status, accuracy, why it failed, and the
    seconds it trained."""

    name: str
    status: str
    acc: float | None
    reason: str | None = None
    train_seconds: float = 0.0


Progress = Callable[[Any], None]  # what a run reports through: one of the events above (or trainers.full's) at a time


def dispatch(handlers: Mapping[type, Callable[[Any], None]]) -> Progress:
    """The progress callback that hands each event to the handler of its type; an event no handler takes is ignored
    (a printer hears only what it shows)."""

    def progress(event: Any) -> None:
        handler = handlers.get(type(event))
        if handler is not None:
            handler(event)

    return progress


def ignore(event: Any) -> None:
    """The progress callback of a run nobody watches."""
