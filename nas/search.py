"""The search: an Optuna multi-objective study in SQL storage, with Ray Tune running the proxy trainings.

Ray's own `OptunaSearch` cannot refuse an over-budget point before it trains, nor keep an ASHA-stopped
trial off the Pareto front (it reaches the study as COMPLETE with its partial accuracy), so a small
`Searcher` below drives the study with ask/tell instead:

- ask -> sample the space -> analytic cost of the target network -> over budget or already evaluated?
  record it (PRUNED, with the reason) and ask again; otherwise hand the config to Ray Tune;
- a trial that trained every epoch is told COMPLETE with [accuracy, FLOPs]; one ASHA stopped is PRUNED
  with its partial accuracy and epochs kept as attributes; one that raised is FAIL with its reason.

Trials left RUNNING by a driver that died are marked FAIL and their configs queued again: at once on a
SQLite study (one driver at a time, so they are surely orphans), after their heartbeat goes stale on a
shared study (PostgreSQL, several drivers).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from ray import tune
from ray._private import utils as ray_utils
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from nas.settings import SearchSettings, check_search
from nas.storage import SqliteDriverLock, is_sqlite, mask_passwords, open_storage, requeue, results_folder
from space.config import ArchConfig
from space.cost import arch_cost
from space.errors import ConvspaceError
from trainers.data import load_data
from trainers.settings import ProxySettings

ACC, FLOPS = "acc", "flops"
STATUS = "status"  # user attr: trained | stopped | over_budget | duplicate | failed
OVER_BUDGET = "flops_over_budget"  # the trial's constraint: FLOPs minus the budget
# NSGA-II with a small population and TPE with few start-up trials, so that short searches still evolve.
_SAMPLER_FACTORIES: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(population_size=8, seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's multi-objective samplers, one per name in SAMPLERS (checked by SearchSettings)."""
    return _SAMPLER_FACTORIES[name](seed)


def study_identity(s: SearchSettings) -> dict[str, Any]:
    """What must not change when a study is resumed (else its trials would not be comparable)."""
    return {
        "space": s.space.name, "space_dims": {k: dataclasses.asdict(d) for k, d in s.space.dims.items()},
        "budget": s.budget, "cost_resolution": s.cost_resolution, "cost_classes": s.cost_classes,
        "proxy": {k: v for k, v in s.proxy.to_dict().items() if k not in ("threads",)},
    }  # fmt: skip


def open_study(s: SearchSettings) -> tuple[optuna.Study, RDBStorage]:
    """Create or resume the study; refuse to resume one made with another space, budget or proxy.

    The storage comes back too: failing a trial of a dead driver and heartbeats go through its public API.
    """
    import json

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the command shows progress itself
    storage = open_storage(s.storage, heartbeat=(s.heartbeat_interval, s.heartbeat_grace))
    study = optuna.create_study(
        study_name=s.study, storage=storage, directions=["maximize", "minimize"],
        sampler=make_sampler(s.sampler, s.seed), load_if_exists=True,
    )  # fmt: skip
    identity = json.loads(json.dumps(study_identity(s)))
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_metric_names(["proxy_accuracy", "flops"])
        study.set_user_attr("identity", identity)
        study.set_user_attr("budget", s.budget)
    elif stored != identity:
        raise ConvspaceError(
            f"study: {s.study!r} was made with other settings ({'; '.join(changed_settings(stored, identity))}); "
            "resume it with the study's settings or pick a new --study name"
        )
    return study, storage


def changed_settings(stored: dict[str, Any], asked: dict[str, Any], prefix: str = "") -> list[str]:
    """Each setting that differs, as `proxy.epochs 3 in the study, 5 now`, so the user sees what to change."""
    changes = []
    for key in sorted(set(stored) | set(asked)):
        old, new = stored.get(key, "unset"), asked.get(key, "unset")
        if isinstance(old, dict) and isinstance(new, dict):
            changes += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key} {old} in the study, {new} now")
    return changes


INTERRUPTED = "interrupted"


def fail_and_requeue(study: optuna.Study, storage: RDBStorage, number: int, params: dict[str, Any], why: str) -> None:
    """A trial that could not finish through no fault of its config: FAIL it and queue its parameters again.

    Through the storage: Optuna's trial objects give no public way to write attributes of a trial that another
    process (a dead driver) asked for."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    storage.set_trial_user_attr(trial_id, STATUS, "failed")
    storage.set_trial_user_attr(trial_id, "fail_reason", f"{INTERRUPTED}: {why}")
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
    requeue(study, number, params, why)


def recover_interrupted(study: optuna.Study, storage: RDBStorage) -> int:
    """With the study to ourselves (SQLite lock held), every RUNNING trial was left by a dead driver: retrain it."""
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        fail_and_requeue(study, storage, trial.number, trial.params, "its driver stopped")
    return len(stale)


def counts_toward_total(trial: optuna.trial.FrozenTrial) -> bool:
    """Trials that trained to an end (completed, stopped early, failed by their own fault) or are training now.

    Interrupted trials (a dead driver, Ctrl-C) do not count: their configs are queued to train again.
    """
    if trial.state == TrialState.RUNNING:
        return bool(trial.user_attrs.get("accepted"))
    return trial.user_attrs.get(STATUS) in ("trained", "stopped", "failed") and not str(
        trial.user_attrs.get("fail_reason", "")
    ).startswith(INTERRUPTED)


def holds_config(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether this trial's config has been (or is being) evaluated, so no other trial trains it."""
    if trial.state == TrialState.RUNNING:
        return bool(trial.user_attrs.get("accepted"))
    return trial.state == TrialState.COMPLETE or trial.user_attrs.get(STATUS) == "stopped"


def trained_count(study: optuna.Study) -> int:
    """How many trials count toward --trials (across every driver of the study)."""
    return sum(counts_toward_total(t) for t in study.get_trials(deepcopy=False))


class BudgetedOptunaSearcher:
    """Ask/tell bridge between Optuna and Ray Tune (wrapped as a Ray `Searcher` in `run_search`).

    Several drivers may share one study (PostgreSQL): the total and the no-duplicate rule are checked against
    the storage after each trial is marked `accepted`, and a trial yields if it sees a rival (so at worst both
    yield and the point is sampled again later; never do two train). Live trials send heartbeats so that
    another driver can fail and re-queue them if this one dies.
    """

    def __init__(self, study: optuna.Study, storage: RDBStorage, settings: SearchSettings,
                 progress: Callable[[str, dict[str, Any]], None] | None = None) -> None:  # fmt: skip
        self.study, self.storage, self.settings = study, storage, settings
        self.progress = progress or (lambda event, info: None)  # "rejected" and "started" events for the live view
        self.study_id = storage.get_study_id_from_name(study.study_name)  # once: every heartbeat names a trial by id
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

    def _reject(self, trial: optuna.trial.Trial, status: str) -> None:
        trial.set_user_attr(STATUS, status)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.rejected[status] = self.rejected.get(status, 0) + 1
        self.progress("rejected", {"reason": status})

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next within-budget, never-evaluated config (None once the study holds --trials trials)."""
        optuna.storages.fail_stale_trials(self.study)  # another driver died: its trials are re-queued
        if trained_count(self.study) >= self.settings.trials:
            return None
        for _ in range(10_000):  # rejected points do not change the count; races are settled after acceptance
            trial = self.study.ask()
            if self.storage.get_heartbeat_interval():
                self._beat_for(trial)
            cfg = dataclasses.replace(self.settings.space.sample(trial), num_classes=self.settings.cost_classes)
            cost = arch_cost(cfg, self.settings.cost_resolution)
            for key, value in {"config": cfg.to_json(), "hash": cfg.hash, FLOPS: cost.flops, "params": cost.params}.items():
                trial.set_user_attr(key, value)
            # The budget as Optuna's constraint (feasible when <= 0), for whoever reads the study with Optuna.
            trial.set_constraint(OVER_BUDGET, cost.flops - self.settings.budget)
            if cost.flops > self.settings.budget:
                self._reject(trial, "over_budget")
                continue
            if cfg.hash in self.evaluated:
                self._reject(trial, "duplicate")
                continue
            trial.set_user_attr("accepted", True)
            others = [t for t in self.study.get_trials(deepcopy=False) if t.number != trial.number]
            if any(t.user_attrs.get("hash") == cfg.hash and holds_config(t) for t in others):
                self.evaluated.add(cfg.hash)
                self._reject(trial, "duplicate")
                continue
            if sum(counts_toward_total(t) for t in others) >= self.settings.trials:
                self._reject(trial, "surplus")  # another driver took the last slot first
                return None
            self.evaluated.add(cfg.hash)
            self.live[trial_id] = trial
            trial.set_user_attr("proxy", self.settings.proxy.to_dict())
            self.progress("started", {"number": trial.number, "config": cfg, FLOPS: cost.flops})
            return {"config": cfg.to_json(), "number": trial.number}
        raise ConvspaceError("budget: 10000 sampled points in a row were over budget or duplicates; raise the budget")

    def interrupt_live(self) -> None:
        """Trials still running when Tune stopped (Ctrl-C, time budget): queue them for the next run."""
        for trial_id in list(self.live):
            trial = self.live.pop(trial_id)
            fail_and_requeue(self.study, self.storage, trial.number, trial.params, "the search stopped before it finished")

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        """Tell Optuna how the trial ended: fully trained, stopped by ASHA, or failed."""
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        result = result or {}
        epochs = int(result.get("epoch", 0))
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("wall_seconds", round(time.time() - trial.datetime_start.timestamp(), 2))
        if ACC in result:
            trial.set_user_attr("proxy_accuracy", float(result[ACC]))
            trial.set_user_attr("train_seconds", round(float(result.get("train_seconds", 0.0)), 3))
            # from entering the trainable: also counts model build and data, not dispatch or worker start
            trial.set_user_attr("trainable_seconds", round(float(result.get("trainable_seconds", 0.0)), 3))
        if error or "error" in result or (ACC not in result and not result.get("time_limited")):
            status, reason = "failed", result.get("error") or "the trial process died (see the Ray trial log)"
            trial.set_user_attr(STATUS, status)
            trial.set_user_attr("fail_reason", reason)
            self.study.tell(trial, state=TrialState.FAIL)
        elif epochs >= self.settings.proxy.epochs:
            status, reason = "trained", None
            trial.set_user_attr(STATUS, status)
            self.study.tell(trial, [float(result[ACC]), float(trial.user_attrs[FLOPS])])
        else:
            status, reason = "stopped", "time limit" if result.get("time_limited") else "ASHA"
            trial.set_user_attr(STATUS, status)
            trial.set_user_attr("stop_reason", reason)
            self.study.tell(trial, state=TrialState.PRUNED)
        self.ended[status] = self.ended.get(status, 0) + 1
        self.progress("finished", {"number": trial.number, "status": status, ACC: result.get(ACC), "epoch": epochs, "reason": reason})


def proxy_trainable(config: dict[str, Any], proxy: dict[str, Any], time_limit: float | None = None) -> None:
    """The Ray Tune trainable: one proxy training, each epoch's accuracy reported to Tune (and ASHA); a trial still
    training after `time_limit` seconds ends after its current step, its last report marked `time_limited`."""
    from trainers.proxy import train

    settings, last = ProxySettings(**proxy), {ACC: 0.0, "epoch": 0, "train_seconds": 0.0, "trainable_seconds": 0.0}
    entered = time.time()  # our own clock: Tune's time_total_s counts between its polls of the actor, not this

    def report(epoch: int, accuracy: float, seconds: float) -> None:
        last.update({ACC: accuracy, "epoch": epoch, "train_seconds": seconds, "trainable_seconds": time.time() - entered})
        tune.report(dict(last))

    out_of_time = (lambda: time.time() - entered > time_limit) if time_limit else None
    try:
        result = train(ArchConfig.from_json(config["config"]), settings, on_epoch=report, should_stop=out_of_time)
        if result.epochs < settings.epochs:  # stopped by the time limit; before its first epoch it has no accuracy
            measured = {k: v for k, v in last.items() if k != ACC or result.epochs}
            tune.report({**measured, "time_limited": True, "trainable_seconds": time.time() - entered})
    except Exception as exc:  # the trial fails alone; its reason reaches the study through this last report
        tune.report({**last, "error": f"{type(exc).__name__}: {exc}"[:500]})


# Tune pickles its searcher and callbacks with its experiment state; the study (a live DB connection) and
# the progress printer stay in this process, found by study name.
_DRIVER: dict[str, tuple[BudgetedOptunaSearcher | None, Callable[[str, dict[str, Any]], None] | None]] = {}


class _RaySearcher(Searcher):
    """Ray Tune's view of the bridge: Tune asks for configs and reports how trials ended."""

    def __init__(self, study: str) -> None:
        super().__init__()
        self.study = study

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = _DRIVER[self.study][0].suggest(trial_id)
        return config if config is not None else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        _DRIVER[self.study][0].on_trial_complete(trial_id, result, error)


class TrialProgress(tune.Callback):
    """Forwards per-epoch results and trial ends to the command's progress printer."""

    def __init__(self, study: str) -> None:
        self.study = study

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        progress = _DRIVER.get(self.study, (None, None))[1]
        if progress:
            progress(event, info)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._emit("epoch", {"number": trial.config.get("number", trial.trial_id), ACC: result.get(ACC), "epoch": result.get("epoch")})

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._emit("done", {**(trial.last_result or {}), "number": trial.config.get("number", trial.trial_id),
                            "config": trial.config.get("config")})  # fmt: skip


def set_progress(study: str, progress: Callable[[str, dict[str, Any]], None] | None) -> None:
    """Let Tune's callbacks for `study` print through `progress` (fixed-architecture studies have no searcher)."""
    _DRIVER[study] = (None, progress)


def init_ray(address: str | None) -> None:
    """Start Ray locally (all CPUs of this machine) or join a cluster, quietly."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        # Ray keeps the driver's command line as the job's entrypoint (`ray list jobs`, the cluster's dashboard): a
        # --storage URL there would carry its password, so Ray is given the line with passwords masked.
        entrypoint = getattr(ray_utils, "get_entrypoint_name", None)
        if entrypoint is not None:
            ray_utils.get_entrypoint_name = lambda: mask_passwords(entrypoint())
        try:
            ray.init(
                address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                runtime_env=_cluster_runtime_env() if address else None, **({} if address else {"num_cpus": os.cpu_count()}),
            )  # fmt: skip
        finally:
            if entrypoint is not None:
                ray_utils.get_entrypoint_name = entrypoint


# What a cluster's workers import (the trainable is nas.search.proxy_trainable). Only these travel: not the rest of the
# checkout, where a data/ folder, large files, a .env or credentials may lie (and Ray refuses a package over 512 MiB).
WORKER_PACKAGES = ("space", "trainers", "nas")


def _cluster_runtime_env(root: Path | None = None) -> dict[str, Any]:
    """Ship our packages, and nothing else of the project, to the cluster's workers (they may lack our checkout)."""
    root = root or Path(__file__).resolve().parents[1]
    return {"py_modules": [str(root / name) for name in WORKER_PACKAGES], "excludes": ["__pycache__", "*.pyc"]}


@dataclass
class SearchOutcome:
    """How a run of the search ended (the study holds the trials of every run)."""

    study: optuna.Study
    ended: dict[str, int] = dataclasses.field(default_factory=dict)  # this run's trials: trained, stopped, failed
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)  # sampled points not trained: over_budget, duplicate
    recovered: int = 0  # trials a dead driver left running, failed and queued again
    interrupted: bool = False
    seconds: float = 0.0
    out_of_time: bool = False  # the time budget ended the search before the study held --trials trials


def _recover(study: optuna.Study, storage: RDBStorage, sqlite: bool) -> int:
    """Trials a dead driver left RUNNING: at once when we hold the SQLite lock, else once their heartbeat is stale."""
    if sqlite:
        return recover_interrupted(study, storage)
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - failed


def run_search(s: SearchSettings, progress: Callable[[str, dict[str, Any]], None] | None = None) -> SearchOutcome:
    """Run (or resume) a study until it holds `s.trials` trials (from every driver), or the time budget ends."""
    # What the settings alone cannot tell fails here, before any file is written or Ray starts.
    check_search(s)
    load_data(s.proxy.data, s.proxy.resolution, s.proxy.seed, s.proxy.data_dir)  # files that exist but do not load
    lock = SqliteDriverLock(s.storage) if is_sqlite(s.storage) else None
    if lock:
        lock.acquire()
    try:
        study, storage = open_study(s)
        recovered = _recover(study, storage, lock is not None)
        remaining = s.trials - trained_count(study)
        if progress:
            progress("start", {"remaining": max(remaining, 0), "trials": s.trials})
        if remaining <= 0:
            return SearchOutcome(study, recovered=recovered)
        with results_folder(s.storage, s.results_dir) as results:
            return _tune(s, study, storage, remaining, recovered, progress, results)
    finally:
        if lock:
            lock.release()


def _tune(s: SearchSettings, study: optuna.Study, storage: RDBStorage, remaining: int, recovered: int,
          progress: Callable[[str, dict[str, Any]], None] | None, results: Path) -> SearchOutcome:  # fmt: skip
    """Ray Tune runs the proxy trainings the bridge hands out; ASHA stops the weak ones."""
    started = time.time()
    init_ray(s.address)
    bridge = BudgetedOptunaSearcher(study, storage, s, progress)
    _DRIVER[s.study] = (bridge, progress)
    resources = {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial}
    proxy = dict(s.proxy.to_dict(), threads=max(1, int(s.cpus_per_trial)))
    trainable = tune.with_resources(tune.with_parameters(proxy_trainable, proxy=proxy, time_limit=s.trial_time_limit), resources)
    scheduler = ASHAScheduler(
        metric=ACC, mode="max", time_attr="epoch", max_t=s.proxy.epochs, grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )  # fmt: skip
    concurrency = max(1, int((ray.cluster_resources().get("CPU", 1)) // max(s.cpus_per_trial, 0.01)))
    if s.gpus_per_trial:
        concurrency = max(1, int(ray.cluster_resources().get("GPU", 0) / s.gpus_per_trial))
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(_RaySearcher(s.study), max_concurrent=concurrency), scheduler=scheduler,
            num_samples=remaining, time_budget_s=s.time_budget, reuse_actors=True,  # no re-import of torch per trial
        ),
        run_config=tune.RunConfig(
            name=f"{s.study}-{int(started)}", storage_path=str(results), verbose=0,
            callbacks=[TrialProgress(s.study)], failure_config=tune.FailureConfig(max_failures=0),
        ),
    )  # fmt: skip
    try:
        tuner.fit()
        # Tune catches Ctrl-C itself and returns; trials still live then (and no time budget spent) mean an interrupt.
        interrupted = bool(bridge.live) and not (s.time_budget and time.time() - started >= s.time_budget)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bridge.interrupt_live()
        bridge.close()
        _DRIVER.pop(s.study, None)
    seconds = time.time() - started
    out_of_time = bool(s.time_budget) and seconds >= s.time_budget and trained_count(study) < s.trials
    return SearchOutcome(study, ended=bridge.ended, rejected=bridge.rejected, recovered=recovered, interrupted=interrupted,
                         seconds=seconds, out_of_time=out_of_time)  # fmt: skip
