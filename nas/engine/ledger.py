"""What the search must know of the whole study at each ask and tell, kept in memory: the trials counting toward
--trials, the configs held (trained, stopped, failed by their own fault, or being trained now, by any driver), and the
study's hypervolume.

Why: the bridge used to walk every stored trial several times per ask, hashing each config anew (1.5 s per trial at
2,000 trials), and read the whole study again at each tell for its hypervolume. A finished trial never changes, so the
ledger reads the study once, then at each look only what may have changed: the trials it has not seen yet (numbers are
consecutive) and the ones still running or waiting. The duplicate check therefore reads what is trained or claimed
*now*, by every driver sharing the study (a dead driver's trial stops holding its config once it is failed as
interrupted, so its retry trains), not a set frozen when this driver started; and the hypervolume counts `confirm`'s
repeats as they are stored. See docs/benchmarks.md (bridge overhead) for what this costs at 100 and 5,000 trials.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.engine.record import Status, TrialRecord, counts_toward_total


def hypervolume(points: Iterable[tuple[float, float]], budget: float) -> float:
    """The area dominated by (FLOPs, accuracy) points in the unit square of (FLOPs / budget, accuracy), reference
    point (1, 0): 0 with no point, 1 for a network of no cost at 100%. Dominated points add nothing, so the area
    of all trained trials is that of their front; it never falls as a search adds trials."""
    inside = sorted((flops / budget, min(max(accuracy, 0.0), 1.0)) for flops, accuracy in points if 0 <= flops <= budget)
    area, best = 0.0, 0.0
    for i, (x, y) in enumerate(inside):  # a staircase: left to right, the best accuracy reached so far
        best = max(best, y)
        area += ((inside[i + 1][0] if i + 1 < len(inside) else 1.0) - x) * best
    return area


def staircase(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point dominates in (FLOPs down, accuracy up): the ones a hypervolume is made of."""
    kept: list[tuple[float, float]] = []
    for flops, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not kept or accuracy > kept[-1][1]:
            kept.append((flops, accuracy))
    return kept


class StudyLedger:
    """Counts, held configs and the front's points of a study, read once and then only where they may change."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        # The study's own storage: Optuna's cache of finished trials in front of the database, so a look costs one
        # query for the next trial number and one per open trial, whatever the study holds.
        self._storage, self._study_id = study._storage, study._study_id
        self._counted = 0  # finished trials counting toward --trials
        self._held: Counter[str] = Counter()  # config hashes of finished trials that hold theirs
        self._verdicts: dict[int, tuple[bool, str | None]] = {}  # finished trial number -> (counts, the hash it holds)
        self._open: dict[int, int] = {}  # trial number -> trial id: running or waiting at the last look
        self._open_verdicts: dict[int, tuple[bool, str | None]] = {}
        self._next = 0  # the first trial number not seen yet
        self._own: dict[int, tuple[float, float]] = {}  # fully trained trial -> (FLOPs, the search's own accuracy)
        self._repeats: dict[int, list[tuple[int, float]]] = {}  # trial -> (seed, accuracy) of confirm's repeats
        self._front: list[tuple[float, float]] | None = []  # the staircase of (FLOPs, mean accuracy); None: recompute
        for trial in study.get_trials(deepcopy=False):  # one bulk read
            self._see(trial)
            self._next = max(self._next, trial.number + 1)  # numbers are 0, 1, 2, ... in the order trials are made

    @staticmethod
    def _verdict(trial: FrozenTrial) -> tuple[bool, str | None]:
        counts = counts_toward_total(trial)
        return counts, TrialRecord(trial).hash if counts else None

    def _see(self, trial: FrozenTrial) -> None:
        """Take in a trial as it is now: kept for good once finished, looked at again at each look while open."""
        if not trial.state.is_finished():
            self._open[trial.number] = trial._trial_id
            self._open_verdicts[trial.number] = self._verdict(trial)
            return
        self._open.pop(trial.number, None)
        self._open_verdicts.pop(trial.number, None)
        verdict = self._verdicts[trial.number] = self._verdict(trial)
        self._counted += verdict[0]
        if verdict[1] is not None:
            self._held[verdict[1]] += 1
        if trial.state == TrialState.COMPLETE and trial.values:
            self._own[trial.number] = (float(trial.values[1]), float(trial.values[0]))
            self._add_point(trial.number)
        record = TrialRecord(trial)
        if record.status == Status.REPEAT:
            self._repeats.setdefault(int(record.repeat_of), []).append((int(record.seed), float(record.proxy_accuracy)))
            self._front = None  # a mean moved: a point may leave the front, or one left behind come back

    def _mean(self, number: int) -> float:
        """A trained network's mean accuracy over its seeds, summed as nas.front.seeds.Scores does (own score first)."""
        accuracies = [self._own[number][1], *(a for _, a in sorted(self._repeats.get(number, ())))]
        return sum(accuracies) / len(accuracies)

    def _add_point(self, number: int) -> None:
        if self._front is not None:
            self._front = staircase([*self._front, (self._own[number][0], self._mean(number))])

    def _refresh(self) -> None:
        """Read the trials added since the last look, and the open ones again."""
        while True:
            try:
                trial_id = self._storage.get_trial_id_from_study_id_trial_number(self._study_id, self._next)
            except KeyError:
                break
            self._open[self._next] = trial_id
            self._next += 1
        for trial_id in list(self._open.values()):
            self._see(self._storage.get_trial(trial_id))

    def counted(self, *, skip: int | None = None) -> int:
        """Trials counting toward --trials now, leaving out trial number `skip` (the one asking)."""
        self._refresh()
        open_counted = sum(counts for number, (counts, _) in self._open_verdicts.items() if number != skip)
        return self._counted + open_counted - (self._verdicts.get(skip, (False, None))[0] if skip is not None else 0)

    def holds(self, digest: str, *, skip: int | None = None) -> bool:
        """Whether a trial other than `skip` holds the config with this hash now (trained, or being trained)."""
        self._refresh()
        if any(held == digest for number, (_, held) in self._open_verdicts.items() if number != skip):
            return True
        finished = self._held[digest] - (skip is not None and self._verdicts.get(skip, (False, None))[1] == digest)
        return finished > 0

    def look(self, *, skip: int | None = None) -> tuple[int, set[str]]:
        """(trials counting toward --trials, config hashes held), leaving out trial number `skip`: the whole picture,
        for a reader that wants it all (the search asks `counted` and `holds`, which build no set)."""
        counted = self.counted(skip=skip)
        verdicts = {**self._verdicts, **self._open_verdicts}
        return counted, {held for number, (_, held) in verdicts.items() if held is not None and number != skip}

    def hypervolume(self, budget: float, extra: Iterable[tuple[float, float]] = ()) -> float:
        """The study's hypervolume now (nas.front.pareto.study_hypervolume's number) with `extra` points added."""
        self._refresh()
        if self._front is None:
            self._front = staircase((flops, self._mean(number)) for number, (flops, _) in self._own.items())
        return hypervolume([*self._front, *extra], budget)
