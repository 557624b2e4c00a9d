"""The Optuna side of the search: ask for a point, fit it to the budget, refuse it or hand it to Ray Tune, tell how it ended.

Ray's own `OptunaSearch` cannot refuse a point before it trains, nor keep an ASHA-stopped trial off the Pareto front
(it reaches the study as COMPLETE with its partial accuracy), so this bridge drives the study with ask/tell instead
(no Ray here; `nas.engine.tune` wraps it as a Ray `Searcher`):

- ask -> the sampler proposes a point -> `space.fitting.propose` scales a fitted space's shape onto the sampled FLOPs
  target (or, for an absolute space, costs the point as sampled) -> a point no scale brings into the band, one that
  pads past its maps at the proxy resolution, or one already evaluated is stored PRUNED with its reason and its
  Optuna constraints (TPE models infeasible trials; NSGA-II breeds from feasible ones), and the sampler proposes
  again. A proposal is never swapped for another point: every network trained is the one its trial's params name
  (`proposed_by`: sampler, random, warm_start or retry);
- a trial that trained every epoch is told COMPLETE with [accuracy, FLOPs]; one stopped early is PRUNED with
  its partial accuracy and epochs kept as attributes; one that raised is FAIL with its reason.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas.engine.events import Progress, Rejected, StorageFault, TrialEnded, TrialRequeued, TrialStarted, ignore
from nas.engine.heartbeat import Heartbeat
from nas.engine.ledger import StudyLedger
from nas.engine.record import (
    ACC,
    FLOPS,
    INTERRUPTED,
    OVER_BUDGET_CONSTRAINT,
    PROPOSED_BY,
    STATUS,
    UNDER_BAND_CONSTRAINT,
    Status,
    StudyRecord,
    TrialRecord,
    network_attrs,
    outcome_attrs,
)
from nas.engine.settings import SearchSettings
from nas.engine.study import claim_driver, driver_seed, fail_and_requeue
from space.errors import ConvspaceError
from space.fitting import propose

WORKER_DIED = "worker_died"  # in a trial's last result (nas.engine.tune.worker_death): its Ray worker died under it
WORKER_DEATH = "its Ray worker died"  # the reason a trial so lost is queued again with

POPULATION = 8  # NSGA-II's smallest population and TPE's start-up trials: short searches still evolve
MAX_PROPOSALS = 1000  # refused proposals in a row before the search gives up on the band


def make_sampler(name: str, seed: int, parallel: int = 1) -> optuna.samplers.BaseSampler:
    """Optuna's multi-objective samplers, one per name in nas.engine.settings.SAMPLERS (checked by SearchSettings).

    With `parallel` trials running at once, NSGA-II's population is no smaller than that (else one generation would be
    bred from the few that finished first) and TPE lies about the running ones (`constant_liar`), so that parallel
    asks do not all land on the same point."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(POPULATION, parallel), seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=POPULATION, multivariate=True, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def proposer(trial: optuna.trial.Trial, sampler: str) -> str:
    """Who chose the network of a trial just asked: the warm start or a retry (enqueued with their attributes), else
    the sampler (`random` for random search)."""
    record = TrialRecord(trial)
    if record.names_proposer:
        return record.proposed_by
    return "random" if sampler == "random" else "sampler"


class BudgetedOptunaSearcher:
    """Ask/tell bridge between Optuna and Ray Tune (wrapped as a Ray `Searcher` in `run_search`).

    Several drivers may share one study (PostgreSQL): the total and the no-duplicate rule are checked against
    the storage after each trial is marked `accepted`, and a trial yields if it sees a rival (so at worst both
    yield and the point is sampled again later; never do two train). Live trials send heartbeats while the bridge is
    entered (`with bridge:`, nas.engine.heartbeat) so that another driver can fail and re-queue them if this one dies.
    """

    def __init__(self, study: optuna.Study, storage: RDBStorage, settings: SearchSettings,
                 progress: Progress | None = None, *, parallel: int = 1) -> None:
        self.study, self.storage, self.settings = study, storage, settings
        self.progress = progress or ignore  # what the command's printer hears (nas.engine.events)
        self.study_id = storage.get_study_id_from_name(study.study_name)  # once: every heartbeat names a trial by id
        # Each driver samples with its own seed (see driver_seed); the proxy settings stay the study's.
        self.driver = claim_driver(storage, self.study_id)
        study.sampler = make_sampler(settings.sampler, driver_seed(settings.seed, self.driver), parallel)
        self.band = settings.band
        self.live: dict[str, optuna.trial.Trial] = {}
        self.rejected: dict[str, int] = {}  # sampled points not trained, by reason: over_budget, duplicate, surplus
        self.ended: dict[str, int] = {}  # trials of this run by how they ended: trained, stopped, failed
        self.proposed: dict[str, int] = {}  # trials this run started, by who chose the network (PROPOSERS)
        self.failures: list[str] = []  # why this run's failed trials failed (a search whose every trial fails says so)
        self.ledger = StudyLedger(study)
        self.heartbeat = Heartbeat(storage, self.study_id, lambda: [t.number for t in list(self.live.values())],
                                   on_fault=lambda reason: self.progress(StorageFault(reason)))

    def __enter__(self) -> BudgetedOptunaSearcher:
        """Beat for the live trials while the block runs (nas.engine.heartbeat)."""
        self.heartbeat.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.heartbeat.__exit__(kind, exc, tb)

    def _reject(self, trial: optuna.trial.Trial, status: Status) -> None:
        TrialRecord(trial).write({STATUS: status})
        self.study.tell(trial, state=TrialState.PRUNED)
        self.rejected[status] = self.rejected.get(status, 0) + 1
        self.progress(Rejected(status))

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next within-budget, never-evaluated config (None once the study holds --trials trials)."""
        optuna.storages.fail_stale_trials(self.study)  # another driver died: its trials are re-queued
        if self.ledger.counted() >= self.settings.trials:
            return None
        for _ in range(MAX_PROPOSALS):  # refused points do not change the count; races are settled after acceptance
            trial = self.study.ask()  # a waiting trial first (a retry, the warm start), else the sampler's proposal
            record = TrialRecord(trial)
            if record.names_proposer:
                # An enqueued trial (warm start, retry) has every param fixed, so the sampler never samples it, and Optuna's
                # NSGA-II files a trial under a generation only when it samples (sample_relative): measured, it left the warm
                # start out of every population. Asking for the relative sample once files it; the fixed params still win.
                _ = trial.relative_params
            self.heartbeat.beat(trial.number)
            proposal = propose(self.settings.space, trial, self.band)
            cfg, cost = proposal.config, proposal.cost
            who = proposer(trial, self.settings.sampler)
            record.write({**network_attrs(cfg, cost), **proposal.attrs(), PROPOSED_BY: who})
            # The band as Optuna's constraints (feasible when <= 0): TPE models the infeasible trials, and whoever reads
            # the study with Optuna sees them. A shape no scale fits carries the cost of the nearest network tried.
            trial.set_constraint(OVER_BUDGET_CONSTRAINT, cost.flops - self.settings.budget)
            if self.settings.flops_min:
                trial.set_constraint(UNDER_BAND_CONSTRAINT, self.settings.flops_min - cost.flops)
            if proposal.refusal is not None:
                self._reject(trial, Status(proposal.refusal))
                continue
            digest = cfg.hash
            if self.ledger.holds(digest, skip=trial.number):
                self._reject(trial, Status.DUPLICATE)
                continue
            # Claimed, then checked again: another driver may have claimed the same config or the last slot meanwhile.
            record.write({"accepted": True})
            if self.ledger.holds(digest, skip=trial.number):
                self._reject(trial, Status.DUPLICATE)
                continue
            if self.ledger.counted(skip=trial.number) >= self.settings.trials:
                self._reject(trial, Status.SURPLUS)  # another driver took the last slot first
                return None
            self.live[trial_id] = trial
            # the scheduler is not the study's identity: it may change on resume
            record.write({"proxy": self.settings.proxy.to_dict(), "scheduler": self.settings.scheduler, "driver": self.driver})
            self.proposed[who] = self.proposed.get(who, 0) + 1
            self.progress(TrialStarted(trial.number, cfg, cost.flops, who, record.retry_of))  # the view names what a retry retries
            return {"config": cfg.to_json(), "number": trial.number, FLOPS: cost.flops}  # FLOPs: ParetoASHA's second objective
        raise ConvspaceError(f"budget: {MAX_PROPOSALS} proposals in a row could not be fitted into the band, were too dilated for the proxy "
                             "resolution, or were duplicates; widen the band (--budget, --flops-min) or the space")

    def interrupt_live(self) -> None:
        """Trials still running when Tune stopped (Ctrl-C, time budget): queue them for the next run."""
        for trial_id in list(self.live):
            trial = self.live.pop(trial_id)
            fail_and_requeue(self.study, self.storage, trial.number, trial.params, "the search stopped before it finished")

    def _worker_died(self, trial: optuna.trial.Trial, result: dict[str, Any]) -> bool:
        """A trial whose Ray worker died under it (killed out of memory, a lost node): no fault of its config the first
        time, so it is failed as interrupted and queued once more, with the reason and Ray's report kept on it. A retry
        whose worker dies too fails for good (False: told as any failure), so that a network that kills its own worker
        is not retried forever."""
        record = TrialRecord(trial)
        record.write({"ray_error": result.get("ray_error") or ""})
        why = f"{WORKER_DEATH} ({result['error']})"
        if str(record.retry_reason or "").startswith(WORKER_DEATH):
            result["error"] = f"{why} (again: trial {record.retry_of} lost its worker first)"
            return False
        fail_and_requeue(self.study, self.storage, trial.number, trial.params, why)
        self.progress(TrialRequeued(trial.number, why, result.get("ray_log")))
        return True

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        """Tell Optuna how the trial ended: fully trained (COMPLETE), stopped early (PRUNED) or failed (FAIL)."""
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        result = dict(result or {})
        if error:
            result.setdefault("error", "the trial process died (see the Ray trial log)")
        if result.get(WORKER_DIED) and self._worker_died(trial, result):
            return
        attrs = outcome_attrs(result, epochs=int(result.get("epoch", 0)), proxy_epochs=self.settings.proxy.epochs,
                              scheduler=self.settings.scheduler)
        attrs["wall_seconds"] = round(time.time() - trial.datetime_start.timestamp(), 2)
        status = attrs[STATUS]
        # The study's hypervolume once this trial is told (its history, trial by trial, shows whether the search still
        # improves); on the trial, since a finished trial takes no more attributes, and the latest on the study.
        record = TrialRecord(trial)
        point = [(float(record.flops), attrs["proxy_accuracy"])] if status == Status.TRAINED else []
        attrs["hypervolume"] = self.ledger.hypervolume(self.settings.budget, point)
        record.write(attrs)
        if status == Status.TRAINED:
            self.study.tell(trial, [attrs["proxy_accuracy"], float(record.flops)])
        else:
            self.study.tell(trial, state=TrialState.FAIL if status == Status.FAILED else TrialState.PRUNED)
        StudyRecord(self.study).write({"hypervolume": attrs["hypervolume"]})
        self.ended[status] = self.ended.get(status, 0) + 1
        if status == Status.FAILED and not str(attrs.get("fail_reason", "")).startswith(INTERRUPTED):
            self.failures.append(str(attrs["fail_reason"]))
        self.progress(TrialEnded(trial.number, status, result.get(ACC), attrs["epochs"], attrs.get("fail_reason") or attrs.get("stop_reason")))
