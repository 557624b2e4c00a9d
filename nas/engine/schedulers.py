"""Pareto-aware asynchronous successive halving (MOASHA) as a Ray Tune scheduler.

Ray's ASHA ranks each rung on one metric, so in a two-objective search it stops cheap networks that nothing
dominates (a 0.5 GFLOPs net at 90% loses its rung to 4 GFLOPs nets at 95%). `ParetoASHA` keeps Ray's
asynchronous structure (rungs at grace_period * reduction_factor^k below max_t; a trial is judged once, when
its first result reaches a rung, against the results recorded there so far) but orders a rung the way
syne-tune's MOASHA does (Schmucker et al. 2021): by non-dominated rank, then by an epsilon-net that keeps
the continuing trials spread along the front. A trial continues when its place in that order is in the top
1/reduction_factor of the results at the rung (its own included).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# Non-dominated sorting comes from Optuna, already a dependency (scipy, scikit-learn and Ray have none; pymoo is
# not a dependency). It is private: it was `_fast_non_dominated_sort` before Optuna 4.0 and is
# `_fast_non_domination_rank` from 4.0 (our floor) to 5.0; tests/nas/test_schedulers.py checks its ranks
# directly, so a rename or a change fails there rather than in a search.
from optuna.study._multi_objective import _fast_non_domination_rank
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from space.files import write_atomically

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

MODES = ("max", "min")


def pareto_order(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of `points` best first: by non-dominated rank, then within a front greedily the farthest from those placed."""
    if not points:
        return []
    signs = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])
    loss = np.asarray(points, dtype=float).reshape(len(points), len(modes)) * signs  # every objective minimised
    finite = np.isfinite(loss).all(axis=1)
    # A NaN or infinite objective (a diverged proxy training) must not put a trial on the front just because
    # nothing can dominate it: Optuna's penalty ranks such rows after every finite one.
    ranks = _fast_non_domination_rank(np.where(finite[:, None], loss, 0.0), penalty=np.where(finite, 0.0, 1.0))
    # Distances on a [0, 1] scale per objective over this rung, so accuracy (~0.9) and FLOPs (~1e9) weigh alike;
    # linear in FLOPs because the front's hypervolume is measured on FLOPs / budget, linear too.
    low = loss[finite].min(axis=0) if finite.any() else np.zeros(len(modes))
    span = (loss[finite].max(axis=0) - low) if finite.any() else np.ones(len(modes))
    scaled = (loss - low) / np.where(span > 0, span, 1.0)
    # The epsilon-net (syne-tune's NonDominatedPriority, after Clarkson 2005): within each front, seed with the
    # best value of the first objective, then repeatedly take the point farthest from those of the front placed
    # so far, so a cut inside a front keeps its ends and fills its gaps before it keeps near-duplicates. (Crowding
    # distance scores points once, so two neighbours in a sparse stretch both outrank a lone point elsewhere; the
    # epsilon-net is also syne-tune's default.) The net restarts on each front, as syne-tune's does: distance to the
    # kept points of an earlier front would favour points far behind the front over ones just behind it.
    order: list[int] = []
    for rank in np.unique(ranks[finite]):
        front = [int(i) for i in np.flatnonzero((ranks == rank) & finite)]
        nearest = np.full(len(points), np.inf)  # distance to the nearest point of this front already placed
        pick = front.pop(int(np.argmin(scaled[front, 0])))  # ties go to the earlier index: the result recorded first
        while True:
            order.append(pick)
            if not front:
                break
            nearest = np.minimum(nearest, np.linalg.norm(scaled - scaled[pick], axis=1))
            pick = front.pop(int(np.argmax(nearest[front])))
    return order + [int(i) for i in np.flatnonzero(~finite)]


class ParetoASHA(FIFOScheduler):
    """Asynchronous successive halving that promotes by Pareto rank on several objectives (MOASHA)."""

    def __init__(
        self,
        *,
        metrics: Sequence[str] = ("acc", "flops"),
        modes: Sequence[str] = ("max", "min"),
        time_attr: str = "epoch",
        max_t: int = 100,
        grace_period: int = 1,
        reduction_factor: float = 3,
    ) -> None:
        """Rungs at grace_period * reduction_factor^k below max_t; `metrics` with their `modes` are the objectives."""
        if len(metrics) < 2 or len(metrics) != len(modes):
            raise ValueError(f"ParetoASHA: metrics {list(metrics)} and modes {list(modes)} must be two or more of each, one mode per metric")
        if any(mode not in MODES for mode in modes):
            raise ValueError(f"ParetoASHA: modes {list(modes)} must each be one of {', '.join(MODES)}")
        if not 0 < grace_period <= max_t:
            raise ValueError(f"ParetoASHA: grace_period {grace_period} must be > 0 and <= max_t {max_t}")
        if reduction_factor <= 1:
            raise ValueError(f"ParetoASHA: reduction_factor {reduction_factor} must be > 1")
        super().__init__()
        # Plain data only: Tune pickles the scheduler with the tuner (and save/restore pickles __dict__).
        self._metrics = list(metrics)
        self._modes = list(modes)
        self._metric = self._metrics[0]  # what Tune's own check requires in every result, as with ASHA's metric
        self._time_attr = time_attr
        self._max_t = max_t
        self._reduction_factor = reduction_factor
        milestones, t = [], float(grace_period)
        while t < max_t:  # a rung at max_t would judge nobody: trials stop there anyway
            milestones.append(t)
            t *= reduction_factor
        # Highest milestone first, as in Ray's _Bracket: the first one a result reaches is the rung it is judged at.
        self._rungs: list[tuple[float, dict[str, tuple[float, ...]]]] = [(m, {}) for m in reversed(milestones)]
        self._num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Refuse a metric or mode from TuneConfig: the objectives are this scheduler's own (as ASHA's metric is)."""
        return metric is None and mode is None

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> str:
        """Judge a trial when its result first reaches a rung: continue when its Pareto place is in the top 1/eta."""
        t = result.get(self._time_attr)
        if t is None:
            return TrialScheduler.CONTINUE  # not a training result (as Ray's ASHA treats it)
        if t >= self._max_t:
            action = TrialScheduler.STOP
        else:
            action = self._judge(trial.trial_id, t, result)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> None:
        """Record a finished trial's last result at the rung it reached, so later trials are compared with it."""
        t = result.get(self._time_attr)
        if t is not None and t < self._max_t and all(result.get(name) is not None for name in self._metrics):
            self._judge(trial.trial_id, t, result)

    def _judge(self, trial_id: str, t: float, result: Mapping[str, Any]) -> str:
        """Decide at the highest rung `t` reaches, once per trial and rung, and record the result there."""
        for milestone, recorded in self._rungs:
            if t < milestone:
                continue
            if trial_id in recorded:
                return TrialScheduler.CONTINUE  # judged at this rung already; a skipped lower rung is not judged late
            values = self._objectives(trial_id, result)
            action = self._decide(list(recorded.values()), values)
            recorded[trial_id] = values  # a stopped trial's result stays: later arrivals are compared with it too
            return action
        return TrialScheduler.CONTINUE  # below the grace period

    def _objectives(self, trial_id: str, result: Mapping[str, Any]) -> tuple[float, ...]:
        """The objective values of a result, or an error naming what the trainable must report."""
        missing = [name for name in self._metrics if result.get(name) is None]
        if missing:
            raise ValueError(
                f"ParetoASHA: trial {trial_id} reported {self._time_attr}={result.get(self._time_attr)} without "
                f"{', '.join(missing)}; the trainable must report {', '.join(self._metrics)} in every result "
                f"(got: {', '.join(sorted(result))})"
            )
        try:
            return tuple(float(result[name]) for name in self._metrics)
        except (TypeError, ValueError) as exc:
            values = {name: result[name] for name in self._metrics}
            raise ValueError(f"ParetoASHA: trial {trial_id} reported non-numeric objectives {values}") from exc

    def _decide(self, recorded: list[tuple[float, ...]], values: tuple[float, ...]) -> str:
        """CONTINUE when `values` ranks in the top 1/eta of the rung's results with it, or the rung holds fewer than eta."""
        n = len(recorded) + 1
        if n < self._reduction_factor:
            return TrialScheduler.CONTINUE  # too few results to cut 1 in eta
        points = [*recorded, values]
        order = pareto_order(points, self._modes)
        # On an exact tie with a recorded result the newcomer takes that result's place, as ASHA keeps a trial
        # equal to its cutoff.
        place = min(pos for pos, i in enumerate(order) if points[i] == values)
        return TrialScheduler.CONTINUE if place < n / self._reduction_factor else TrialScheduler.STOP

    def debug_string(self) -> str:
        """One line per rung: its milestone and how many results it holds."""
        rungs = " | ".join(f"{self._time_attr} {m:g}: {len(recorded)} results" for m, recorded in reversed(self._rungs))
        return f"Using ParetoASHA ({', '.join(f'{n} {m}' for n, m in zip(self._metrics, self._modes))}): num_stopped={self._num_stopped}\n{rungs}"

    def save(self, checkpoint_path: str) -> None:
        """Write the scheduler's state (plain data) to a file, as Ray's ASHA does (atomically: a kill mid-write leaves the
        last whole state, which `restore` can read)."""
        write_atomically(Path(checkpoint_path), pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        """Read the state `save` wrote."""
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
