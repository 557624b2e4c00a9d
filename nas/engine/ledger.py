"""What the search must know of the whole study at each ask, kept in memory: the trials counting toward --trials and
the configs held (trained, stopped, failed by their own fault, or being trained now, by any driver).

Why: the bridge used to walk every stored trial several times per ask, hashing each config anew (1.5 s per trial at
2,000 trials). A finished trial never changes, so its verdict is computed once and kept; only the trials still running
or waiting are looked at again. The duplicate check therefore reads what is trained or claimed *now*, by every driver
sharing the study (a dead driver's trial stops holding its config once it is failed as interrupted, so its retry
trains), not a set frozen when this driver started.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from nas.engine.record import TrialRecord, counts_toward_total


class StudyLedger:
    """Counts and held configs of a study, recomputed only for trials that may still change."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self._finished: dict[int, tuple[bool, str | None]] = {}  # trial number -> (counts, the config hash it holds)

    @staticmethod
    def _verdict(trial: FrozenTrial) -> tuple[bool, str | None]:
        counts = counts_toward_total(trial)
        return counts, TrialRecord(trial).hash if counts else None

    def look(self, *, skip: int | None = None) -> tuple[int, set[str]]:
        """(trials counting toward --trials, config hashes held), leaving out trial number `skip` (the one asking)."""
        counted, held = 0, set()
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number == skip:
                continue
            verdict = self._finished.get(trial.number)
            if verdict is None:
                verdict = self._verdict(trial)
                if trial.state.is_finished():
                    self._finished[trial.number] = verdict
            counted += verdict[0]
            if verdict[1] is not None:
                held.add(verdict[1])
        return counted, held
