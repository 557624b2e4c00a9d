"""Given networks, proxy-trained through Ray Tune and recorded as trials of an open study: what `ablation` (presets)
and `fidelity` (sampled networks, trained with two schedules) share.

Unlike a search nothing is sampled and nothing is stopped early: every network trains every epoch. Each becomes a
COMPLETE trial with the search's record of a trained trial ([accuracy, FLOPs], config, outcome), so that `pareto`
and `export` read these studies too, and a rerun can tell from the study which networks are still missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from ray import tune

from nas.bridge import Progress
from nas.record import STATUS, Status, network_attrs, outcome_attrs
from nas.storage import results_folder
from nas.tune import Driver, build_tuner, connect, init_ray
from space.config import ArchConfig
from space.cost import arch_cost
from space.errors import ConvspaceError
from trainers.settings import ProxySettings


@dataclass(frozen=True)
class Job:
    """One network to train: its name in messages, its config, and the attributes its trial gets (how it is found again)."""

    name: str
    config: ArchConfig
    attrs: dict[str, Any] = field(default_factory=dict)


def train_fixed(study: optuna.Study, storage: str, key: str, proxy: ProxySettings, jobs: list[Job], *, cpus: float, gpus: float,
                address: str | None = None, results_dir: str | None = None, progress: Progress | None = None,
                cost_resolution: int = 224) -> None:
    """Train every job with `proxy` and add each trained one to `study` (FLOPs counted at `cost_resolution`); the failed
    ones are named in one error after the others are recorded, so that a rerun retries only them. Progress events carry
    the job's name and attributes."""
    if not jobs:
        return
    by_json = {job.config.to_json(): job for job in jobs}  # Tune hands back each trial's config JSON
    if len(by_json) < len(jobs):
        raise ValueError("train_fixed: two jobs have the same config")

    def named(event: str, info: dict[str, Any]) -> None:
        job = by_json.get(info.get("config"))
        progress(event, {**info, "name": job.name, **job.attrs} if job else info)

    init_ray(address)
    with results_folder(storage, results_dir) as results, connect(key, Driver(progress=named if progress else None)):
        tuner = build_tuner(key, proxy, results, cpus=cpus, gpus=gpus, param_space={"config": tune.grid_search(list(by_json))})
        outcomes = list(tuner.fit())
    failed = []
    for result in outcomes:
        metrics, job = result.metrics or {}, by_json[result.config["config"]]
        attrs = outcome_attrs(metrics if not result.error else {"error": str(result.error)}, epochs=int(metrics.get("epoch", 0)),
                              proxy_epochs=proxy.epochs)
        if attrs[STATUS] != Status.TRAINED:
            failed.append(f"{job.name} ({attrs.get('fail_reason', 'stopped early')})")
            continue
        cost = arch_cost(job.config, cost_resolution)
        study.add_trial(optuna.trial.create_trial(
            values=[attrs["proxy_accuracy"], float(cost.flops)],
            user_attrs={**job.attrs, **network_attrs(job.config, cost), **attrs, "proxy": proxy.to_dict()},
        ))
    if failed:
        raise ConvspaceError(f"train: {len(failed)} of {len(jobs)} networks failed: {'; '.join(failed)}; rerun to retry them")
