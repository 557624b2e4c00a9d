"""Given networks, proxy-trained through Ray Tune and recorded as trials of an open study as each ends: what `ablation`
(presets) and `fidelity` (sampled networks, trained with two schedules) share.

Unlike a search nothing is sampled and nothing is stopped early: every network trains every epoch. Each becomes a
COMPLETE trial with the search's record of a trained trial ([accuracy, FLOPs], config, outcome), so that `pareto`
and `export` read these studies too, and a rerun can tell from the study which networks are still missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from nas.engine.events import Progress, RunEnded, ignore
from nas.engine.ray_cluster import init_ray
from nas.engine.record import ACC, STATUS, Status, network_attrs, new_trial, outcome_attrs
from nas.engine.settings import CostSettings, TrialResources
from nas.engine.storage import results_folder
from nas.engine.tune import RunQueue, train_queue
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


def train_fixed(study: optuna.Study, storage: str, key: str, proxy: ProxySettings, jobs: list[Job], *, resources: TrialResources,
                cost: CostSettings | None = None, results_dir: str | None = None, progress: Progress | None = None) -> None:
    """Train every job with `proxy` and `resources` and add each to `study` as soon as it is trained (FLOPs counted as
    `cost` says; default: the papers' convention),
    so that a killed run loses only the trainings in flight; the failed ones are named in one error once the others
    have ended, and a rerun retries only them. A job whose Ray worker died is trained once more first (nas.engine.tune.RunQueue).
    Progress events (RunEnded as each is stored, RunRequeued) name the job."""
    if not jobs:
        return
    by_json = {job.config.to_json(): job for job in jobs}  # Tune hands back each trial's config JSON
    if len(by_json) < len(jobs):
        raise ValueError("train_fixed: two jobs have the same config")
    failed: list[str] = []
    resolution = (cost or CostSettings()).cost_resolution
    progress = progress or ignore

    def ended(spec: dict[str, Any], result: dict[str, Any]) -> None:
        job = by_json[spec["config"]]
        attrs = outcome_attrs(result, epochs=int(result.get("epoch", 0)), proxy_epochs=proxy.epochs)
        if attrs[STATUS] == Status.TRAINED:
            priced = arch_cost(job.config, resolution)
            study.add_trial(new_trial({**job.attrs, **network_attrs(job.config, priced), **attrs, "proxy": proxy.to_dict()},
                                      values=[attrs["proxy_accuracy"], float(priced.flops)]))
        else:
            failed.append(f"{job.name} ({attrs.get('fail_reason', 'stopped early')})")
        progress(RunEnded(job.name, attrs[STATUS], result.get(ACC), attrs.get("fail_reason"), result.get("train_seconds", 0.0)))

    init_ray(resources.address)
    queue = RunQueue([{"config": config} for config in by_json], ended, progress=progress, name=lambda spec: by_json[spec["config"]].name)
    with results_folder(storage, results_dir) as results:
        train_queue(key, proxy, results, queue, cpus=resources.cpus_per_trial, gpus=resources.gpus_per_trial, progress=progress)
    if failed:
        raise ConvspaceError(f"train: {len(failed)} of {len(jobs)} networks failed: {'; '.join(failed)}; rerun to retry them")
