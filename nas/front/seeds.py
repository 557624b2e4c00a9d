"""Repeated seeds of trained trials (`confirm`): every score of a network, their mean and spread, the study's noise floor.

Optuna refuses writes to a finished trial, so each repeat is a trial of its own: status `repeat`, state PRUNED (never
on Optuna's own front, never a completed point to a sampler, not counted toward --trials), naming the trial it repeats
and its seed. This module gathers them back onto the trials they repeat; `pareto`, `analyze` and `export` read scores
through it, so a network's accuracy is the mean of its seeds wherever it is shown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from nas.engine.record import Status, StudyRecord, TrialRecord

NOISE_SES = 2.0  # a gain is "within noise" below this many standard errors of the difference (~95% two-sided)


@dataclass(frozen=True)
class Scores:
    """A trained network's proxy accuracies: the search's own score first, then each repeat in seed order."""

    accuracies: tuple[float, ...]
    seeds: tuple[int, ...]

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std(self) -> float | None:
        """Sample standard deviation over the seeds (None for a single seed: no spread is known)."""
        n = len(self.accuracies)
        if n < 2:
            return None
        return math.sqrt(sum((a - self.mean) ** 2 for a in self.accuracies) / (n - 1))


def study_seed(study: optuna.Study) -> int:
    """The seed of the search's own trainings (its proxy's), which a repeat must not reuse."""
    return int(((StudyRecord(study).identity or {}).get("proxy") or {}).get("seed", 0))


def seed_scores(study: optuna.Study) -> dict[int, Scores]:
    """Every fully trained trial's scores by trial number, its repeats gathered onto it."""
    trials = study.get_trials(deepcopy=False)
    own = study_seed(study)
    scores = {t.number: ([float(t.values[0])], [own]) for t in trials if t.state == TrialState.COMPLETE and t.values}
    records = (TrialRecord(t) for t in trials)
    repeats = sorted((r.repeat_of, r.seed, float(r.proxy_accuracy)) for r in records if r.status == Status.REPEAT)
    for number, seed, accuracy in repeats:
        if number in scores:
            scores[number][0].append(accuracy)
            scores[number][1].append(seed)
    return {n: Scores(tuple(a), tuple(s)) for n, (a, s) in scores.items()}


def noise_floor(scores: Iterable[Scores]) -> tuple[float, int] | None:
    """The pooled standard deviation of the networks trained with several seeds, and how many there are.

    Pooled (sum of squared deviations over the summed degrees of freedom) rather than averaged: a network with more
    seeds tells more about the spread. None until some network has two seeds."""
    repeated = [s for s in scores if len(s.accuracies) > 1]
    if not repeated:
        return None
    squares = sum(sum((a - s.mean) ** 2 for a in s.accuracies) for s in repeated)
    freedom = sum(len(s.accuracies) - 1 for s in repeated)
    return math.sqrt(squares / freedom), len(repeated)


def within_noise(front: Sequence[Scores], floor: float | None) -> list[bool]:
    """For front points ordered by FLOPs: whether each one's gain over the next cheaper front point is smaller than
    NOISE_SES standard errors of the difference of two means (floor * sqrt(1/n_a + 1/n_b)). Such a point costs more
    FLOPs for an accuracy the seeds cannot tell apart from the cheaper one's. All False without a noise floor."""
    if floor is None:
        return [False] * len(front)
    marks = [False]
    for cheaper, point in zip(front, front[1:]):
        error = floor * math.sqrt(1 / len(point.accuracies) + 1 / len(cheaper.accuracies))
        marks.append(point.mean - cheaper.mean < NOISE_SES * error)
    return marks
