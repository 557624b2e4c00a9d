"""The search: a two-objective Optuna study in SQL storage, its proxy trainings run by Ray Tune.

`run_search` checks what it can before anything starts, opens (or resumes) the study, recovers trials a dead
driver left running, and lets Tune train what the bridge hands out until the study holds --trials trials.
Trials left RUNNING by a driver that died are marked FAIL and their configs queued again: at once on a SQLite
study (one driver at a time, so they are surely orphans), after their heartbeat goes stale on a shared study
(PostgreSQL, several drivers).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RDBStorage

from nas.engine.bridge import BudgetedOptunaSearcher, make_sampler
from nas.engine.events import Progress, SearchOpened
from nas.engine.record import ACC, FLOPS
from nas.engine.settings import SearchSettings, check_search
from nas.engine.storage import SqliteDriverLock, is_sqlite, results_folder
from nas.engine.study import open_study, recover, trained_count
from nas.engine.warm_start import enqueue_warm_start, warm_start_size
from space.errors import ConvspaceError

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

# Ray, Tune and torch (trainers.data) are imported where a search trains: rerunning a study that already holds its trials
# prints its front without them (in about a second instead of ten).


@dataclass
class SearchOutcome:
    """How a run of the search ended (the study holds the trials of every run)."""

    study: optuna.Study
    ended: dict[str, int] = field(default_factory=dict)  # this run's trials: trained, stopped, failed
    rejected: dict[str, int] = field(default_factory=dict)  # sampled points not trained: infeasible, duplicate, ...
    proposed: dict[str, int] = field(default_factory=dict)  # this run's trials by who chose them: sampler, warm_start, ...
    failures: list[str] = field(default_factory=list)  # why this run's failed trials failed
    recovered: int = 0  # trials a dead driver left running, failed and queued again
    warm_started: list[str] = field(default_factory=list)  # published networks enqueued first by this run
    interrupted: bool = False
    seconds: float = 0.0
    out_of_time: bool = False  # the time budget ended the search before the study held --trials trials


def study_identity(s: SearchSettings) -> dict[str, Any]:
    """What must not change when a study is resumed (else its trials would not be comparable): SearchSettings.identity."""
    return s.identity()


def open_search_study(s: SearchSettings) -> tuple[optuna.Study, RDBStorage]:
    """The search's study, created or resumed (refused when it was made with another space, budget or proxy)."""
    return open_study(s.study, s.storage, study_identity(s), sampler=make_sampler(s.sampler, s.seed),
                      heartbeat=(s.heartbeat_interval, s.heartbeat_grace), attrs={"budget": s.budget, "flops_min": s.flops_min})


def run_search(s: SearchSettings, progress: Progress | None = None, *, checked: bool = False) -> SearchOutcome:
    """Run (or resume) a study until it holds `s.trials` trials (from every driver), or the time budget ends.

    `checked`: the caller ran `check_search(s)` already (the command line does, before it imports torch and Ray)."""
    started = time.time()  # --time-budget counts from here: data, study and Ray's start are part of the search's time
    # What the settings alone cannot tell fails here, before any file is written or Ray starts.
    if not checked:
        check_search(s)
    lock = SqliteDriverLock(s.storage) if is_sqlite(s.storage) else None
    if lock:
        lock.acquire()
    try:
        study, storage = open_search_study(s)
        recovered = recover(study, storage, sole_driver=lock is not None)
        remaining = s.trials - trained_count(study)
        # A new study only: on a resume the sampler has trials of its own to breed from.
        warm = enqueue_warm_start(study, s.space, s.band, warm_start_size(s.trials)) if s.warm_start and remaining == s.trials else []
        if progress:
            progress(SearchOpened(max(remaining, 0), s.trials, tuple(warm)))
        if remaining <= 0:
            return SearchOutcome(study, recovered=recovered)
        from trainers.data import load_data

        # Files that exist but do not load fail here; CIFAR or an ImageFolder is decoded into the cache now, once, by this
        # driver, so that the trials only open it.
        load_data(s.proxy.data, s.proxy.resolution, s.proxy.seed, s.proxy.data_dir, s.proxy.cache_dir)
        with results_folder(s.storage, s.results_dir) as results:
            outcome = _tune(s, study, storage, remaining, progress=progress, results=results, started=started)
        return dataclasses.replace(outcome, recovered=recovered, warm_started=warm)
    finally:
        if lock:
            lock.release()


def check_cluster_fits(cpus: float, gpus: float) -> None:
    """A trial asking for more CPUs or GPUs than the whole cluster has would wait forever: refused in one line."""
    import ray

    have = ray.cluster_resources()
    for name, wanted, key in (("cpus-per-trial", cpus, "CPU"), ("gpus-per-trial", gpus, "GPU")):
        if wanted > have.get(key, 0):
            raise ConvspaceError(f"{name}: {wanted:g} asked, but the Ray cluster has {have.get(key, 0):g} {key}s in all: "
                                 "a trial would wait forever; ask for fewer or add nodes")


def make_scheduler(s: SearchSettings) -> TrialScheduler | None:
    """The early stopping of --scheduler: ParetoASHA on (accuracy, FLOPs), Ray's ASHA on accuracy, or none (FIFO)."""
    from ray.tune.schedulers import ASHAScheduler

    from nas.engine.schedulers import ParetoASHA

    rungs = dict(time_attr="epoch", max_t=s.proxy.epochs, grace_period=min(s.grace_period, s.proxy.epochs), reduction_factor=s.reduction_factor)
    if s.scheduler == "pareto-asha":
        return ParetoASHA(metrics=(ACC, FLOPS), modes=("max", "min"), **rungs)
    if s.scheduler == "asha":
        return ASHAScheduler(metric=ACC, mode="max", **rungs)
    return None  # Tune's FIFO: every trial trains every epoch (only --trial-time-limit stops one early)


def _tune(s: SearchSettings, study: optuna.Study, storage: RDBStorage, remaining: int, *, progress: Progress | None,
          results: Path, started: float) -> SearchOutcome:
    """Ray Tune runs the proxy trainings the bridge hands out; the scheduler (ParetoASHA, ASHA or none) stops the weak ones."""
    from ray.tune.search import ConcurrencyLimiter

    from nas.engine.ray_cluster import init_ray
    from nas.engine.tune import BridgeSearcher, Driver, build_tuner, concurrency, connect

    init_ray(s.address)
    check_cluster_fits(s.cpus_per_trial, s.gpus_per_trial)
    parallel = concurrency(s.cpus_per_trial, s.gpus_per_trial)
    bridge = BudgetedOptunaSearcher(study, storage, s, progress, parallel=parallel)
    scheduler = make_scheduler(s)
    searcher = ConcurrencyLimiter(BridgeSearcher(s.study), max_concurrent=parallel)
    tuner = build_tuner(s.study, s.proxy, results, cpus=s.cpus_per_trial, gpus=s.gpus_per_trial, time_limit=s.trial_time_limit,
                        search_alg=searcher, scheduler=scheduler,
                        # twice: a trial whose worker died is queued once more; the bridge itself stops at --trials
                        num_samples=2 * remaining,
                        # what is left of --time-budget once Ray is up (Tune's clock starts at fit, not at the command)
                        time_budget_s=max(1.0, s.time_budget - (time.time() - started)) if s.time_budget else None)
    with bridge:  # its live trials beat until the last is queued again or told
        try:
            with connect(s.study, Driver(bridge, progress)):
                tuner.fit()
            # Tune catches Ctrl-C itself and returns; trials still live then (and no time budget spent) mean an interrupt.
            interrupted = bool(bridge.live) and not (s.time_budget and time.time() - started >= s.time_budget)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bridge.interrupt_live()
    seconds = time.time() - started
    out_of_time = bool(s.time_budget) and seconds >= s.time_budget and trained_count(study) < s.trials
    return SearchOutcome(study, ended=bridge.ended, rejected=bridge.rejected, proposed=bridge.proposed, failures=bridge.failures,
                         interrupted=interrupted, seconds=seconds,
                         out_of_time=out_of_time)
