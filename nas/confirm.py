"""`confirm`: train the front's networks (or the N most accurate) again with other seeds, so that the front stands
on means and the study knows its noise floor (NDS, Radosavovic et al. 2019, reran top and median models for this).

Same proxy as the search (the study's identity), other seeds for initialisation, training subset and batch order,
the same validation images; through the same Ray Tune wiring. Each repeat is stored as soon as it ends (nas.seeds),
so an interrupted run loses only the trainings in flight and a rerun trains only what is missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.bridge import Progress
from nas.pareto import front, load_study
from nas.record import ACC, STATUS, Status, outcome_attrs
from nas.seeds import REPEAT_OF, SEED, seed_scores, study_seed
from nas.settings import check_confirm
from nas.storage import SqliteDriverLock, is_sqlite, results_folder
from nas.study import upgraded
from space.errors import ConvspaceError
from trainers.settings import ProxySettings


@dataclass
class ConfirmOutcome:
    """What a run of `confirm` did (the study holds the repeats of every run)."""

    study: optuna.Study
    targets: list[int]  # the trials confirmed: the front's (on the means before this run) or the top N
    trained: int = 0  # repeats trained and stored by this run
    failed: list[str] = field(default_factory=list)  # `trial 12, seed 2: <reason>`, not stored: a rerun retries them
    unconfirmed: list[int] = field(default_factory=list)  # front trials (on the new means) with fewer seeds than asked


def study_proxy(study: optuna.Study) -> ProxySettings:
    """The proxy the study's trials were trained with (its identity), which every repeat must use too."""
    proxy = (upgraded(study.user_attrs.get("identity")) or {}).get("proxy")  # a study from before --augment: off
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
    network = {k: original.user_attrs[k] for k in ("config", "hash", "flops", "params")}
    return optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={
        **network, **attrs, STATUS: Status.REPEAT, REPEAT_OF: original.number, SEED: seed})


def run_confirm(study_name: str, storage: str, *, seeds: int, top: int | None = None, cpus_per_trial: float = 1.0,
                gpus_per_trial: float = 0.0, address: str | None = None, results_dir: str | None = None,
                progress: Progress | None = None, checked: bool = False) -> ConfirmOutcome:
    """Train what is missing for `seeds` seeds per target trial; each repeat is stored as it ends.

    `checked`: the caller ran `check_confirm` already (the command line does, before it imports Ray)."""
    if not checked:
        check_confirm(seeds, top, cpus_per_trial, gpus_per_trial, address)
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
            progress("start", {"targets": outcome.targets, "runs": len(runs), "seeds": seeds})
        if runs:
            _train(study, proxy, runs, outcome, storage=storage, cpus=cpus_per_trial, gpus=gpus_per_trial, address=address,
                   results_dir=results_dir, progress=progress)
        scores = seed_scores(study)
        outcome.unconfirmed = [t.number for t in front(study, scores) if len(scores[t.number].accuracies) < seeds and top is None]
        return outcome
    finally:
        if lock:
            lock.release()


def _train(study: optuna.Study, proxy: ProxySettings, runs: list[tuple[FrozenTrial, int]], outcome: ConfirmOutcome, *,
           storage: str, cpus: float, gpus: float, address: str | None, results_dir: str | None, progress: Progress | None) -> None:
    """One Tune run over the (network, seed) pairs; each ending is stored (or counted as failed) at once."""
    from ray import tune  # here: a study that is missing or has nothing to confirm is refused without starting Ray

    from nas.tune import Driver, build_tuner, connect, init_ray
    from trainers.data import load_data

    # CIFAR or an ImageFolder is decoded into the cache by this driver (a no-op when the search left it there), so
    # that the trials only open it.
    load_data(proxy.data, proxy.resolution, proxy.seed, proxy.data_dir, proxy.cache_dir)

    originals = {t.number: t for t, _ in runs}

    def ended(event: str, info: dict[str, Any]) -> None:
        if event == "done":
            number, seed = int(info["number"]), int(info["seed"])
            attrs = outcome_attrs(info, epochs=int(info.get("epoch", 0)), proxy_epochs=proxy.epochs)
            if attrs[STATUS] == Status.TRAINED:
                study.add_trial(repeat_trial(originals[number], seed, attrs))
                outcome.trained += 1
            else:
                outcome.failed.append(f"trial {number}, seed {seed}: {attrs.get('fail_reason') or 'stopped before its last epoch'}")
            info = {**info, "status": attrs[STATUS], ACC: attrs.get("proxy_accuracy")}
        if progress:
            progress(event, info)

    init_ray(address)
    key = f"{study.study_name}-confirm"
    specs = [{"config": t.user_attrs["config"], "seed": seed, "number": t.number} for t, seed in runs]
    with results_folder(storage, results_dir) as results, connect(key, Driver(progress=ended)):
        tuner = build_tuner(key, proxy, results, cpus=cpus, gpus=gpus, param_space={"run": tune.grid_search(specs)})
        tuner.fit()
