"""`confirm`: train the front's networks (or the N most accurate) again with other seeds, so that the front stands
on means and the study knows its noise floor (NDS, Radosavovic et al. 2019, reran top and median models for this).

Same proxy as the search (the study's identity), other seeds for initialisation, training subset and batch order,
the same validation images; through the same Ray Tune wiring. Each repeat is stored as soon as it ends (nas.front.seeds),
so an interrupted run loses only the trainings in flight and a rerun trains only what is missing.

On a shared study (PostgreSQL) several `confirm` runs may work at once: each (network, seed) pair is claimed on the
study right before it trains (`PairClaims`), so no two runs train or store the same pair; a run that is killed
leaves claims that lapse after CLAIM_GRACE seconds. A SQLite study takes one driver at a time (its lock) and needs none.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from nas.engine.events import ConfirmOpened, Progress, RunEnded, ignore
from nas.engine.record import STATUS, Status, StudyRecord, TrialRecord, new_trial, outcome_attrs
from nas.engine.settings import TrialResources, check_confirm
from nas.engine.storage import SqliteDriverLock, is_sqlite, open_storage, results_folder
from nas.engine.study import upgraded
from nas.front.pareto import front, load_study
from nas.front.seeds import seed_scores, study_seed
from space.errors import ConvspaceError
from trainers.settings import ProxySettings


@dataclass
class ConfirmOutcome:
    """What a run of `confirm` did (the study holds the repeats of every run)."""

    study: optuna.Study
    targets: list[int]  # the trials confirmed: the front's (on the means before this run) or the top N
    trained: int = 0  # repeats trained and stored by this run
    failed: list[str] = field(default_factory=list)  # `trial 12, seed 2: <reason>`, not stored: a rerun retries them
    elsewhere: list[str] = field(default_factory=list)  # `trial 12, seed 2`: trained by another confirm run (its claim)
    unconfirmed: list[int] = field(default_factory=list)  # front trials (on the new means) with fewer seeds than asked


def study_proxy(study: optuna.Study) -> ProxySettings:
    """The proxy the study's trials were trained with (its identity), which every repeat must use too."""
    proxy = (upgraded(StudyRecord(study).identity) or {}).get("proxy")  # a study from before --augment: off
    if not isinstance(proxy, dict):
        raise ConvspaceError(f"confirm: study {study.study_name!r} records no proxy settings (not made by convspace's search or ablation)")
    fields = {f.name for f in dataclasses.fields(ProxySettings)}
    return ProxySettings(**{k: v for k, v in proxy.items() if k in fields})


def targets(study: optuna.Study, top: int | None) -> list[FrozenTrial]:
    """The trials to confirm: the front on the current means, or the `top` most accurate (ties: fewer FLOPs)."""
    scores = seed_scores(study)
    if top is None:
        return front(study, scores)
    trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number in scores]
    return sorted(trained, key=lambda t: (-scores[t.number].mean, t.values[1]))[:top]


def missing_runs(study: optuna.Study, trials: list[FrozenTrial], seeds: int) -> list[tuple[FrozenTrial, int]]:
    """(trial, seed) pairs still to train for `seeds` seeds in all: the search's own seed counts as the first."""
    scores, own = seed_scores(study), study_seed(study)
    wanted = [own + i for i in range(1, seeds)]
    return [(t, s) for t in trials for s in wanted if s not in scores[t.number].seeds]


def repeat_trial(original: FrozenTrial, seed: int, attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
    """A repeat as a stored trial: PRUNED, so that neither Optuna's front nor a sampler takes it for a new point."""
    record = TrialRecord(original)
    network = {"config": record.config, "hash": record.hash, "flops": record.flops, "params": record.params}
    return new_trial({**network, **attrs, STATUS: Status.REPEAT, "repeat_of": original.number, "seed": seed}, state=TrialState.PRUNED)


CONFIRM_CLAIM = "convspace:confirm:"  # study system attrs `convspace:confirm:<trial>:<seed>`: who trains that pair
CLAIM_BEAT, CLAIM_GRACE = 10.0, 60.0  # seconds: a claim is renewed this often while its pair trains; unrenewed this long, it lapses


class PairClaims:
    """Which `confirm` run trains which (network, seed) pair of a study that several runs share.

    A claim is a study system attribute holding the run's token and when it last renewed it. Optuna's storage has no
    compare-and-set, so a claim is written, then read back after `settle` seconds (as nas.engine.study.claim_driver does): of
    two runs that claimed the same pair together, the one whose token was overwritten leaves it. A background thread
    renews this run's claims every `beat` seconds; one not renewed for `grace` seconds (its run was killed) may be
    taken; one released (its training ended) is free at once."""

    def __init__(self, storage: BaseStorage, study_id: int, *, settle: float = 0.2, beat: float = CLAIM_BEAT,
                 grace: float = CLAIM_GRACE) -> None:
        self.storage, self.study_id, self.settle, self.beat, self.grace = storage, study_id, settle, beat, grace
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)
        self._thread.start()

    @staticmethod
    def key(number: int, seed: int) -> str:
        """The study system attr that claims trial `number`'s repeat with `seed`."""
        return f"{CONFIRM_CLAIM}{number}:{seed}"

    def _live(self, value: Any) -> bool:
        """Whether a stored claim is another run's, renewed within the grace period."""
        return isinstance(value, dict) and value.get("token") not in (None, self.token) and time.time() - float(value.get("at", 0)) < self.grace

    def claim(self, number: int, seed: int) -> bool:
        """Take the pair for this run: False when another live run holds it, or took it at the same moment."""
        key = self.key(number, seed)
        if self._live(self.storage.get_study_system_attrs(self.study_id).get(key)):
            return False
        self.storage.set_study_system_attr(self.study_id, key, {"token": self.token, "at": time.time()})
        time.sleep(self.settle)
        if (self.storage.get_study_system_attrs(self.study_id).get(key) or {}).get("token") != self.token:
            return False
        with self._lock:
            self.held.add(key)
        return True

    def release(self, number: int, seed: int) -> None:
        """The pair's training ended (its repeat stored, or failed): the claim is free for whoever looks next."""
        key = self.key(number, seed)
        with self._lock:
            self.held.discard(key)
        self.storage.set_study_system_attr(self.study_id, key, {"token": None, "at": time.time()})

    def _renew(self) -> None:
        """Renew every held claim each beat. A renewal that fails (the storage gave up waiting) is tried again next beat:
        a claim lapses only when its run stops renewing it for `grace` seconds."""
        while not self._stop.wait(self.beat):
            with self._lock:
                held = list(self.held)
            for key in held:
                try:
                    self.storage.set_study_system_attr(self.study_id, key, {"token": self.token, "at": time.time()})
                except Exception:  # noqa: BLE001 - this thread must not die: the next beat tries again
                    break

    def close(self) -> None:
        """Stop renewing (the claims still held lapse after the grace period)."""
        self._stop.set()


def repeat_name(spec: dict[str, Any]) -> str:
    """A (network, seed) pair as `confirm` prints it: `repeat of trial 3 with seed 2`."""
    return f"repeat of trial {spec['number']} with seed {spec['seed']}"


def stored_repeat(study: optuna.Study, number: int, seed: int) -> bool:
    """Whether the study holds a repeat of trial `number` with `seed` (stored by this run or another)."""
    records = (TrialRecord(t) for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    return any(r.status == Status.REPEAT and r.repeat_of == number and r.seed == seed for r in records)


def run_confirm(study_name: str, storage: str, *, seeds: int, top: int | None = None, resources: TrialResources | None = None,
                results_dir: str | None = None, progress: Progress | None = None, checked: bool = False) -> ConfirmOutcome:
    """Train what is missing for `seeds` seeds per target trial, with `resources` (default: nas.engine.settings'); each repeat
    is stored as it ends.

    `checked`: the caller ran `check_confirm` already (the command line does, before it imports Ray)."""
    resources = resources or TrialResources()
    if not checked:
        check_confirm(seeds, top, resources)
    lock = SqliteDriverLock(storage) if is_sqlite(storage) else None
    if lock:
        lock.acquire()  # a search writing the same SQLite study at once would meet "database is locked"
    try:
        study = load_study(study_name, storage)
        proxy = study_proxy(study)
        chosen = targets(study, top)
        if not chosen:
            raise ConvspaceError(f"confirm: study {study_name!r} has no fully trained trial to confirm yet")
        runs = missing_runs(study, chosen, seeds)
        outcome = ConfirmOutcome(study, [t.number for t in chosen])
        if progress:
            progress(ConfirmOpened(tuple(outcome.targets), len(runs), seeds))
        if runs:
            _train(study, proxy, runs, outcome, storage=storage, resources=resources, results_dir=results_dir, progress=progress)
        scores = seed_scores(study)
        outcome.unconfirmed = [t.number for t in front(study, scores) if len(scores[t.number].accuracies) < seeds and top is None]
        return outcome
    finally:
        if lock:
            lock.release()


def _train(study: optuna.Study, proxy: ProxySettings, runs: list[tuple[FrozenTrial, int]], outcome: ConfirmOutcome, *,
           storage: str, resources: TrialResources, results_dir: str | None, progress: Progress | None) -> None:
    """The (network, seed) pairs through Ray Tune, one at a time as the cluster frees up; on a shared study each is
    claimed right before it is handed out. Each ending is stored (or counted as failed) at once."""
    from nas.engine.ray_cluster import init_ray
    from nas.engine.tune import RunQueue, train_queue
    from trainers.data import load_data

    # CIFAR or an ImageFolder is decoded into the cache by this driver (a no-op when the search left it there), so
    # that the trials only open it.
    load_data(proxy.data, proxy.resolution, proxy.seed, proxy.data_dir, proxy.cache_dir)

    originals = {t.number: t for t, _ in runs}
    claims = None
    if not is_sqlite(storage):  # a SQLite study has one driver at a time (its lock): nothing to share
        rdb = open_storage(storage)
        claims = PairClaims(rdb, rdb.get_study_id_from_name(study.study_name))
    progress = progress or ignore

    def claim(spec: dict[str, Any]) -> bool:
        number, seed = spec["number"], spec["seed"]
        if not claims.claim(number, seed):
            outcome.elsewhere.append(f"trial {number}, seed {seed}")
            return False
        if stored_repeat(study, number, seed):  # another run stored it after this one listed what was missing
            claims.release(number, seed)
            return False
        return True

    def ended(spec: dict[str, Any], result: dict[str, Any]) -> None:
        number, seed = int(spec["number"]), int(spec["seed"])
        attrs = outcome_attrs(result, epochs=int(result.get("epoch", 0)), proxy_epochs=proxy.epochs)
        if attrs[STATUS] != Status.TRAINED:
            outcome.failed.append(f"trial {number}, seed {seed}: {attrs.get('fail_reason') or 'stopped before its last epoch'}")
        elif claims is None or not stored_repeat(study, number, seed):  # a lapsed claim taken over: the first to end stores
            study.add_trial(repeat_trial(originals[number], seed, attrs))
            outcome.trained += 1
        if claims:
            claims.release(number, seed)  # after storing: whoever claims it next finds the repeat stored
        progress(RunEnded(repeat_name(spec), attrs[STATUS], attrs.get("proxy_accuracy"), attrs.get("fail_reason"),
                          result.get("train_seconds", 0.0)))

    init_ray(resources.address)
    queue = RunQueue([{"config": TrialRecord(t).config, "seed": seed, "number": t.number} for t, seed in runs], ended,
                     claim=claim if claims else None, progress=progress, name=repeat_name)
    try:
        with results_folder(storage, results_dir) as results:
            train_queue(f"{study.study_name}-confirm", proxy, results, queue, cpus=resources.cpus_per_trial, gpus=resources.gpus_per_trial,
                        progress=progress)
    finally:
        if claims:
            claims.close()
