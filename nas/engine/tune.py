"""The Ray Tune side: one trainable, one tuner builder, and the link from Tune's objects back to this process.

The search and the ablation both run their proxy trainings through `build_tuner`. Tune pickles its searcher and
callbacks with its experiment state, so they cannot hold the live study (a database connection) or the command's
printer: they hold a key, and `connect` registers what that key stands for in this process while Tune runs.
Starting or joining the Ray cluster they run on is nas.engine.ray_cluster's job.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from nas.engine.bridge import WORKER_DEATH, WORKER_DIED, BudgetedOptunaSearcher
from nas.engine.events import EpochEnded, Progress, RunRequeued, ignore
from nas.engine.record import ACC, EPOCH_ACCURACIES, FLOPS
from space.config import ArchConfig
from trainers.settings import ProxySettings


def run_spec(config: dict[str, Any]) -> dict[str, Any]:
    """What one Tune trial trains: its config itself, or the (network, seed) pair under "run" that `confirm` grids over
    (Tune's grid search crosses its keys; a list of pairs must be one key)."""
    return config.get("run", config)


def proxy_trainable(config: dict[str, Any], proxy: dict[str, Any], time_limit: float | None = None) -> None:
    """The Ray Tune trainable: one proxy training, each epoch's accuracy reported to Tune (and ASHA); a trial still
    training after `time_limit` seconds ends after its current step, its last report marked `time_limited`."""
    from trainers.proxy import train

    config = run_spec(config)
    settings = ProxySettings(**proxy)
    # Every report carries the target's FLOPs (ParetoASHA ranks a rung on accuracy and FLOPs; the ablation's fixed
    # networks have none in their config and need none) and the accuracies so far, which the trial keeps.
    # The worker's pid: a driver (or a test) can tell which process trains the trial.
    last: dict[str, Any] = {**({FLOPS: config[FLOPS]} if FLOPS in config else {}), ACC: 0.0, "epoch": 0, "train_seconds": 0.0,
                            "trainable_seconds": 0.0, EPOCH_ACCURACIES: [], "pid": os.getpid()}
    entered = time.time()  # our own clock: Tune's time_total_s counts between its polls of the actor, not this

    def report(epoch: int, accuracy: float, seconds: float) -> None:
        last.update({ACC: accuracy, "epoch": epoch, "train_seconds": seconds, "trainable_seconds": time.time() - entered,
                     EPOCH_ACCURACIES: [*last[EPOCH_ACCURACIES], accuracy]})
        tune.report(dict(last))

    out_of_time = (lambda: time.time() - entered > time_limit) if time_limit else None
    try:
        result = train(ArchConfig.from_json(config["config"]), settings, on_epoch=report, should_stop=out_of_time,
                       seed=config.get("seed"))  # `confirm` repeats a network with other seeds
        if result.epochs < settings.epochs:  # stopped by the time limit; before its first epoch it has no accuracy
            measured = {k: v for k, v in last.items() if k != ACC or result.epochs}
            tune.report({**measured, "time_limited": True, "trainable_seconds": time.time() - entered})
    except Exception as exc:  # the trial fails alone; its reason reaches the study through this last report
        tune.report({**last, "error": f"{type(exc).__name__}: {exc}"[:500]})


@dataclass
class Driver:
    """What a running search, confirm or fixed-network run is, in this process: what hands out its trainings and
    hears how they ended (the bridge to the search's study, or a RunQueue), the command's progress printer, and Tune's
    live trials by id (a trial whose worker died is known to the searcher by its id alone)."""

    bridge: BudgetedOptunaSearcher | RunQueue | None = None
    progress: Progress | None = None
    trials: dict[str, Any] = field(default_factory=dict)


def worker_death(trial: Any) -> dict[str, Any]:
    """What a trial whose Ray worker died ended with (Tune tells the searcher `error=True` and nothing else): one line of
    why for the study and the screen, Ray's whole report (`ray_error`) and the file Tune keeps it in (`ray_log`)."""
    path = Path(trial.path) / "error.txt" if trial is not None and getattr(trial, "path", None) else None
    text = ""
    error_file = getattr(trial, "error_file", None) if trial is not None else None
    with contextlib.suppress(OSError, TypeError):
        text = Path(error_file).read_text(errors="replace")  # written by Tune before it tells the searcher
    return {"error": death_reason(text), WORKER_DIED: True, "ray_error": text[-4000:], "ray_log": _shown(path) if path else None}


def death_reason(report: str) -> str:
    """Ray's report of a dead worker in a few words: `worker process has died, SYSTEM_ERROR` (its ids, exit detail and
    advice stay in the report)."""
    lines = [line.strip() for line in report.splitlines() if line.strip() and not line.startswith(("Failure #", "\t"))]
    because = next((line.split(" because ", 1)[1] for line in lines if " because " in line), lines[0] if lines else "")
    cause = because.split(". ")[0].rstrip(".").removeprefix("its ").removeprefix("it ")
    exit_type = re.search(r"Worker exit type: (\S+)", report)
    detail = ", ".join(part for part in (cause, exit_type and exit_type.group(1)) if part)
    return detail[:160] or "no report from Ray"


def _shown(path: Path) -> str:
    """A path as the user can type it from here: relative when under the working folder."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


@dataclass
class _Run:
    spec: dict[str, Any]
    retried: bool = False


class RunQueue:
    """A given list of trainings (`confirm`'s network and seed pairs, `fidelity`'s and `ablation`'s networks) handed to
    Tune one at a time, each told to `on_end(spec, result)` as it ends, so that a kill loses none that finished.

    `claim(spec)` (a shared study) is asked right before a training is handed out: False skips it (another run trains it).
    `limit`: how many run at once (train_queue sets it to what the cluster fits).
    A training whose Ray worker died is handed out once more, told to `progress` as a RunRequeued under `name(spec)`;
    dying again, it ends failed. No Ray here: `QueueSearcher` is Tune's view of it."""

    def __init__(self, specs: list[dict[str, Any]], on_end: Callable[[dict[str, Any], dict[str, Any]], None], *, limit: int = 1,
                 claim: Callable[[dict[str, Any]], bool] | None = None, progress: Progress | None = None,
                 name: Callable[[dict[str, Any]], str] = str) -> None:
        self.pending = [_Run(spec) for spec in specs]
        self.on_end, self.claim, self.limit, self.name = on_end, claim, max(1, limit), name
        self.progress = progress or ignore
        self.live: dict[str, _Run] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next training to run, or None: none left, or `limit` running (more would wait in Tune's queue, claimed)."""
        while self.pending and len(self.live) < self.limit:
            run = self.pending.pop(0)
            if run.retried or self.claim is None or self.claim(run.spec):  # a retry holds its claim still
                self.live[trial_id] = run
                return run.spec
        return None

    @property
    def done(self) -> bool:
        """Nothing left to hand out and nothing running (a running training may still come back to be retried)."""
        return not self.pending and not self.live

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None, error: bool = False) -> None:
        """A training ended: handed out again if its worker died the first time, else told to `on_end`."""
        run = self.live.pop(trial_id, None)
        if run is None:
            return
        result = dict(result or {})
        if result.get(WORKER_DIED) or error:
            result["error"] = f"{WORKER_DEATH} ({result.get('error') or 'no report from Ray'})" + (" again" if run.retried else "")
            if not run.retried:
                run.retried = True
                self.pending.insert(0, run)
                self.progress(RunRequeued(self.name(run.spec), result["error"], result.get("ray_log")))
                return
        self.on_end(run.spec, result)


_DRIVERS: dict[str, Driver] = {}


@contextlib.contextmanager
def connect(key: str, driver: Driver) -> Iterator[None]:
    """Make `driver` what Tune's searcher and callbacks named `key` reach, while the block runs."""
    _DRIVERS[key] = driver
    try:
        yield
    finally:
        _DRIVERS.pop(key, None)


class BridgeSearcher(Searcher):
    """Ray Tune's view of the bridge: Tune asks for configs and reports how trials ended."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.full = False  # the study held --trials at the last ask while this driver's trials ran

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        # With the study full, wait for this driver's last trials rather than end: one whose worker dies is queued once
        # more and trains in this run. Asked again only when a trial ends (Tune asks ten times a second).
        bridge = _DRIVERS[self.key].bridge
        if self.full and bridge.live:
            return None
        config = bridge.suggest(trial_id)
        self.full = config is None
        return config if config is not None else (None if bridge.live else Searcher.FINISHED)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        driver = _DRIVERS[self.key]
        driver.bridge.on_trial_complete(trial_id, _ended(driver, trial_id, result, error), error)
        self.full = False


def _ended(driver: Driver, trial_id: str, result: dict | None, error: bool) -> dict | None:
    """A trial's last result; for one whose worker died (`error`: the trainable itself never raises), Ray's report of it."""
    trial = driver.trials.pop(trial_id, None)
    return {**(result or {}), **worker_death(trial)} if error else result


class QueueSearcher(Searcher):
    """Ray Tune's view of a RunQueue: waits while the last trainings run (one may come back to be retried), then ends."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        queue = _DRIVERS[self.key].bridge
        config = queue.suggest(trial_id)
        return config if config is not None else (Searcher.FINISHED if queue.done else None)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        driver = _DRIVERS[self.key]
        driver.bridge.on_trial_complete(trial_id, _ended(driver, trial_id, result, error), error)


class TrialProgress(tune.Callback):
    """Forwards each epoch's result to the command's progress printer (how a trial ended is told by whoever stores it:
    the bridge, or the RunQueue's owner)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def on_trial_start(self, iteration, trials, trial, **info):
        driver = _DRIVERS.get(self.key)
        if driver is not None:  # kept until the searcher hears how it ended: a dead worker's report is in its folder
            driver.trials[trial.trial_id] = trial

    def on_trial_result(self, iteration, trials, trial, result, **info):
        driver = _DRIVERS.get(self.key)
        if driver and driver.progress:
            spec = run_spec(trial.config)
            driver.progress(EpochEnded(spec.get("number", trial.trial_id), result.get("epoch"), result.get(ACC), spec.get("seed"),
                                       result.get("pid")))


def build_tuner(key: str, proxy: ProxySettings, results: Path, *, cpus: float, gpus: float, time_limit: float | None = None,
                **tune_config: Any) -> tune.Tuner:
    """A Tuner of proxy trainings whose searcher and callbacks reach the driver connected as `key`.

    `tune_config` goes to TuneConfig (search_alg, scheduler, num_samples, time_budget_s); `param_space` to the Tuner."""
    param_space = tune_config.pop("param_space", None)
    settings = dict(proxy.to_dict(), threads=max(1, int(cpus)))
    trainable = tune.with_resources(tune.with_parameters(proxy_trainable, proxy=settings, time_limit=time_limit), {"cpu": cpus, "gpu": gpus})
    return tune.Tuner(
        trainable, param_space=param_space,
        # reused actors: no re-import of torch per trial; trial folders named by the trial's id (Tune's default name
        # spells out the config, 150 characters of it, in every path a message shows)
        tune_config=tune.TuneConfig(reuse_actors=True, trial_dirname_creator=_trial_folder, **tune_config),
        run_config=tune.RunConfig(name=f"{key}-{int(time.time())}", storage_path=str(results), verbose=0, callbacks=[TrialProgress(key)],
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def _trial_folder(trial: Any) -> str:
    """A trial's folder name under its run's: `trial_<Tune's trial id>`."""
    return f"trial_{trial.trial_id}"


def train_queue(key: str, proxy: ProxySettings, results: Path, queue: RunQueue, *, cpus: float, gpus: float,
                progress: Progress | None = None) -> None:
    """Train what `queue` hands out, as many at once as the cluster fits (Ray started). The queue's owner tells how each
    training ended as it stores it; Tune's epochs go to `progress`."""
    queue.limit = concurrency(cpus, gpus)
    tuner = build_tuner(key, proxy, results, cpus=cpus, gpus=gpus, search_alg=QueueSearcher(key),
                        num_samples=2 * len(queue.pending))  # twice: a training whose worker died is handed out once more
    with connect(key, Driver(queue, progress)):
        tuner.fit()


def concurrency(cpus: float, gpus: float) -> int:
    """How many trials the cluster runs at once with these resources each."""
    if gpus:
        return max(1, int(ray.cluster_resources().get("GPU", 0) / gpus))
    return max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus, 0.01)))
