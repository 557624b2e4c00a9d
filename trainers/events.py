"""What a full training (trainers.full) tells its caller as it goes, as typed events (no torch here: a printer imports
this without the trainer). The search's events are nas.engine.events; `nas.engine.events.dispatch` dispatches these too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepEnded:
    """One optimiser step of epoch `epoch` (1-based) ended: `step` of `steps`."""

    epoch: int
    step: int
    steps: int


@dataclass(frozen=True)
class EpochTrained:
    """An epoch ended, was evaluated and checkpointed: `summary` is the line log.jsonl got (epoch, train_loss, top1, top5,
    lr, seconds, best_top1, and ema_top1/ema_top5 where an EMA is kept)."""

    summary: dict[str, Any]
