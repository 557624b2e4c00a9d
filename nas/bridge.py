"""The Optuna side of the search: ask for a point, cost it, refuse it or hand it to Ray Tune, tell how it ended.

Ray's own `OptunaSearch` cannot refuse an over-budget point before it trains, nor keep an ASHA-stopped trial off
the Pareto front (it reaches the study as COMPLETE with its partial accuracy), so this bridge drives the study
with ask/tell instead (no Ray here; `nas.tune` wraps it as a Ray `Searcher`):

- ask -> sample the space -> analytic cost of the target network -> over budget (or under --flops-min) or already
  evaluated? record it (PRUNED, with the reason) and ask again; otherwise hand the config to Ray Tune. After a
  proposal out of the band, the next point is screened in memory first (see `_screened`), so a trained trial costs
  at most one stored out-of-band sample;
- a trial that trained every epoch is told COMPLETE with [accuracy, FLOPs]; one stopped early is PRUNED with
  its partial accuracy and epochs kept as attributes; one that raised is FAIL with its reason.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas.pareto import study_hypervolume
from nas.record import (
    ACC,
    FLOPS,
    OVER_BUDGET_CONSTRAINT,
    SCREENED,
    STATUS,
    UNDER_BAND_CONSTRAINT,
    Status,
    counts_toward_total,
    holds_config,
    network_attrs,
    outcome_attrs,
)
from nas.settings import SearchSettings
from nas.study import claim_driver, driver_seed, fail_and_requeue, trained_count
from space.choices import SeededSuggester
from space.config import ArchConfig
from space.cost import arch_cost, check_fits
from space.errors import ConvspaceError

Progress = Callable[[str, dict[str, Any]], None]  # the command's progress printer: event name, details

# NSGA-II with a small population and TPE with few start-up trials, so that short searches still evolve.
_SAMPLER_FACTORIES: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(population_size=8, seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's multi-objective samplers, one per name in nas.settings.SAMPLERS (checked by SearchSettings)."""
    return _SAMPLER_FACTORIES[name](seed)


class BudgetedOptunaSearcher:
    """Ask/tell bridge between Optuna and Ray Tune (wrapped as a Ray `Searcher` in `run_search`).

    Several drivers may share one study (PostgreSQL): the total and the no-duplicate rule are checked against
    the storage after each trial is marked `accepted`, and a trial yields if it sees a rival (so at worst both
    yield and the point is sampled again later; never do two train). Live trials send heartbeats so that
    another driver can fail and re-queue them if this one dies.
    """

    def __init__(self, study: optuna.Study, storage: RDBStorage, settings: SearchSettings,
                 progress: Progress | None = None) -> None:
        self.study, self.storage, self.settings = study, storage, settings
        self.progress = progress or (lambda event, info: None)  # "rejected" and "started" events for the live view
        self.study_id = storage.get_study_id_from_name(study.study_name)  # once: every heartbeat names a trial by id
        # Each driver samples with its own seed (see driver_seed); the proxy settings stay the study's.
        self.driver = claim_driver(storage, self.study_id)
        study.sampler = make_sampler(settings.sampler, driver_seed(settings.seed, self.driver))
        self.rng = random.Random(driver_seed(settings.seed, self.driver))  # the in-memory screening's draws
        self.live: dict[str, optuna.trial.Trial] = {}
        self.rejected: dict[str, int] = {}  # sampled points not trained, by reason: over_budget, duplicate, surplus
        self.ended: dict[str, int] = {}  # trials of this run by how they ended: trained, stopped, failed
        self.evaluated = {t.user_attrs.get("hash") for t in study.get_trials(deepcopy=False) if holds_config(t)}
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeats, daemon=True)
        self._beat.start()

    def _heartbeats(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while interval and not self._stop.wait(interval):
            for trial in list(self.live.values()):
                self._beat_for(trial)

    def _beat_for(self, trial: optuna.trial.Trial) -> None:
        self.storage.record_heartbeat(self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number))

    def close(self) -> None:
        self._stop.set()

    def _reject(self, trial: optuna.trial.Trial, status: Status) -> None:
        trial.set_user_attr(STATUS, status)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.rejected[status] = self.rejected.get(status, 0) + 1
        self.progress("rejected", {"reason": status})

    def _refusal(self, cfg: ArchConfig, flops: int) -> Status | None:
        """Why a point of `flops` FLOPs is refused before training (over the budget, under --flops-min, or a dilated
        conv padding past its map at the proxy resolution: every tap but the centre would read padding, so the proxy
        would score a degenerate network, not the one the FLOPs count), or None."""
        if flops > self.settings.budget:
            return Status.OVER_BUDGET
        if flops < self.settings.flops_min:
            return Status.UNDER_BAND
        try:
            check_fits(cfg, self.settings.proxy.resolution)
        except ConvspaceError:
            return Status.UNFIT
        return None

    def _screened(self) -> dict[str, Any]:
        """The params of a point inside the band, drawn at random in memory; the points drawn outside it are counted
        on the study (`rejected_over_budget`, `rejected_under_band`), never stored as trials.

        Why this shape: a trial must exist in the storage before Optuna's sampler proposes its params, and a proposal
        over the budget cannot be withdrawn or re-drawn inside its trial, so asking the sampler again and again (as
        before) stored ~10 rejected trials per trained one on the default space, some at 10,000x the budget. Screening
        every point in memory instead (enqueue only in-band draws) would cut the sampler out of the search entirely.
        So the sampler proposes first, always; only when its proposal falls outside the band (stored once, with its
        constraint, so whoever reads the study sees what it proposed) is the next point a random in-band draw (the
        RegNet way: sample inside a FLOPs band, pycls' check_complexity_constraints), enqueued so that it becomes a
        normal trial of the study that NSGA-II/TPE take into their population and model like any other. A trained
        trial therefore costs at most one stored out-of-band sample; the analytic cost takes ~0.2 ms a point."""
        refused: dict[str, int] = {}
        for _ in range(100_000):
            draw = _RecordingSuggester(self.rng)
            cfg = dataclasses.replace(self.settings.space.sample(draw), num_classes=self.settings.cost_classes)
            reason = self._refusal(cfg, arch_cost(cfg, self.settings.cost_resolution).flops)
            if reason is None:
                break
            refused[reason] = refused.get(reason, 0) + 1
        else:
            raise ConvspaceError("budget: 100000 points drawn in a row fell outside the budget (and --flops-min) or were too "
                                 "dilated for the proxy resolution; widen the band")
        for reason, n in refused.items():  # read-add-write: two drivers adding at once may lose a few counts, no more
            key = SCREENED[reason]
            self.study.set_user_attr(key, int(self.study.user_attrs.get(key, 0)) + n)
            self.rejected[reason] = self.rejected.get(reason, 0) + n
            for _ in range(n):
                self.progress("rejected", {"reason": reason})
        return draw.params

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next within-budget, never-evaluated config (None once the study holds --trials trials)."""
        optuna.storages.fail_stale_trials(self.study)  # another driver died: its trials are re-queued
        if trained_count(self.study) >= self.settings.trials:
            return None
        screen = False  # set once the sampler proposed a point outside the band: the next is screened in memory
        for _ in range(10_000):  # rejected points do not change the count; races are settled after acceptance
            # Only when no trial waits: ask() takes the oldest waiting trial first (a retry, already in budget), and an
            # enqueued draw it passed over would be left waiting after the search.
            if screen and not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                self.study.enqueue_trial(self._screened(), user_attrs={"screened": True})
            trial = self.study.ask()
            if self.storage.get_heartbeat_interval():
                self._beat_for(trial)
            cfg = dataclasses.replace(self.settings.space.sample(trial), num_classes=self.settings.cost_classes)
            cost = arch_cost(cfg, self.settings.cost_resolution)
            for key, value in network_attrs(cfg, cost).items():
                trial.set_user_attr(key, value)
            # The budget as Optuna's constraint (feasible when <= 0), for whoever reads the study with Optuna.
            trial.set_constraint(OVER_BUDGET_CONSTRAINT, cost.flops - self.settings.budget)
            if self.settings.flops_min:
                trial.set_constraint(UNDER_BAND_CONSTRAINT, self.settings.flops_min - cost.flops)
            reason = self._refusal(cfg, cost.flops)
            if reason is not None:
                self._reject(trial, reason)
                screen = True
                continue
            if cfg.hash in self.evaluated:
                self._reject(trial, Status.DUPLICATE)
                continue
            trial.set_user_attr("accepted", True)
            others = [t for t in self.study.get_trials(deepcopy=False) if t.number != trial.number]
            if any(t.user_attrs.get("hash") == cfg.hash and holds_config(t) for t in others):
                self.evaluated.add(cfg.hash)
                self._reject(trial, Status.DUPLICATE)
                continue
            if sum(counts_toward_total(t) for t in others) >= self.settings.trials:
                self._reject(trial, Status.SURPLUS)  # another driver took the last slot first
                return None
            self.evaluated.add(cfg.hash)
            self.live[trial_id] = trial
            trial.set_user_attr("proxy", self.settings.proxy.to_dict())
            trial.set_user_attr("scheduler", self.settings.scheduler)  # not the study's identity: it may change on resume
            trial.set_user_attr("driver", self.driver)
            self.progress("started", {"number": trial.number, "config": cfg, FLOPS: cost.flops})
            return {"config": cfg.to_json(), "number": trial.number, FLOPS: cost.flops}  # FLOPs: ParetoASHA's second objective
        raise ConvspaceError("budget: 10000 sampled points in a row were outside the budget or duplicates; raise the budget")

    def interrupt_live(self) -> None:
        """Trials still running when Tune stopped (Ctrl-C, time budget): queue them for the next run."""
        for trial_id in list(self.live):
            trial = self.live.pop(trial_id)
            fail_and_requeue(self.study, self.storage, trial.number, trial.params, "the search stopped before it finished")

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        """Tell Optuna how the trial ended: fully trained (COMPLETE), stopped early (PRUNED) or failed (FAIL)."""
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        result = dict(result or {})
        if error:
            result.setdefault("error", "the trial process died (see the Ray trial log)")
        attrs = outcome_attrs(result, epochs=int(result.get("epoch", 0)), proxy_epochs=self.settings.proxy.epochs,
                              scheduler=self.settings.scheduler)
        attrs["wall_seconds"] = round(time.time() - trial.datetime_start.timestamp(), 2)
        status = attrs[STATUS]
        # The study's hypervolume once this trial is told (its history, trial by trial, shows whether the search still
        # improves); on the trial, since a finished trial takes no more attributes, and the latest on the study.
        point = [(float(trial.user_attrs[FLOPS]), attrs["proxy_accuracy"])] if status == Status.TRAINED else []
        attrs["hypervolume"] = study_hypervolume(self.study, point)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if status == Status.TRAINED:
            self.study.tell(trial, [attrs["proxy_accuracy"], float(trial.user_attrs[FLOPS])])
        else:
            self.study.tell(trial, state=TrialState.FAIL if status == Status.FAILED else TrialState.PRUNED)
        self.study.set_user_attr("hypervolume", attrs["hypervolume"])
        self.ended[status] = self.ended.get(status, 0) + 1
        self.progress("finished", {"number": trial.number, "status": status, ACC: result.get(ACC), "epoch": attrs["epochs"],
                                   "reason": attrs.get("fail_reason") or attrs.get("stop_reason")})


class _RecordingSuggester(SeededSuggester):
    """A seeded random draw of the space that keeps the params it drew, to enqueue them as a trial's."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.params[name] = value = super().suggest_categorical(name, choices)
        return value

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        self.params[name] = value = super().suggest_int(name, low, high, step, log)
        return value

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        self.params[name] = value = super().suggest_float(name, low, high, step, log)
        return value
