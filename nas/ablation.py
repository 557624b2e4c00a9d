"""Fixed-architecture studies (e.g. the ConvNeXt roadmap): proxy-train each listed preset through Ray Tune,
store the results in an Optuna study, and compare them with reference (paper) accuracies.

Unlike a search nothing is sampled and nothing is stopped early: every listed network trains fully, and a
rerun only trains the ones the study does not hold yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray import tune

from nas.search import ACC, STATUS, TrialProgress, init_ray, proxy_trainable, set_progress
from nas.settings import check_trial_resources
from nas.storage import open_storage, results_folder
from space.config import ArchConfig
from space.cost import arch_cost
from space.errors import ConvspaceError
from space.files import read_yaml
from space.presets import get_preset
from trainers.data import load_data
from trainers.settings import ProxySettings

_KEYS = {"study", "proxy", "reference"}


@dataclass(frozen=True)
class StudyFile:
    """A ready study: its name, the proxy settings, and the networks with their reference accuracy."""

    study: str
    proxy: ProxySettings
    reference: dict[str, float]


def load_study_file(path: str | Path) -> StudyFile:
    """Read and validate a study file (unknown keys and unknown presets are refused)."""
    path = Path(path)
    if not path.is_file():
        raise ConvspaceError(f"study file: no file {str(path)!r}")
    data = read_yaml(path, "study file")
    if not isinstance(data, dict) or set(data) - _KEYS or not {"study", "reference"} <= set(data):
        raise ConvspaceError(f"study file: {path} needs the keys study, reference (and optionally proxy), nothing else")
    for name in data["reference"]:
        get_preset(name)
    proxy_fields = {f.name for f in dataclasses.fields(ProxySettings)}
    unknown = set(data.get("proxy") or {}) - proxy_fields
    if unknown:
        raise ConvspaceError(f"study file: proxy.{sorted(unknown)[0]} is unknown; allowed: {', '.join(sorted(proxy_fields))}")
    try:
        proxy = ProxySettings(**(data.get("proxy") or {}))
    except ConvspaceError as exc:
        raise ConvspaceError(f"study file: proxy.{exc}") from None
    return StudyFile(str(data["study"]), proxy, {k: float(v) for k, v in data["reference"].items()})


def run_ablation(file: StudyFile, storage: str, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, address: str | None = None,
                 results_dir: str | None = None, progress: Callable[[str, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Train the networks the study does not hold yet; return one row per network (proxy and reference accuracy)."""
    # What the study file alone cannot tell fails here, before any file is written or Ray starts.
    check_trial_resources(cpus_per_trial, gpus_per_trial, address)
    load_data(file.proxy.data, file.proxy.resolution, file.proxy.seed, file.proxy.data_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=file.study, storage=open_storage(storage), directions=["maximize", "minimize"],
                                load_if_exists=True)  # fmt: skip
    done = {t.user_attrs["preset"] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    todo = [name for name in file.reference if name not in done]
    if todo:
        init_ray(address)
        jsons = [dataclasses.replace(get_preset(n), num_classes=1000).to_json() for n in todo]

        def named(event: str, info: dict[str, Any]) -> None:  # progress events name the network
            if info.get("config") in jsons:
                info = {**info, "preset": todo[jsons.index(info["config"])]}
            progress(event, info)

        set_progress(file.study, named if progress else None)
        proxy = dict(file.proxy.to_dict(), threads=max(1, int(cpus_per_trial)))
        trainable = tune.with_resources(tune.with_parameters(proxy_trainable, proxy=proxy), {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        with results_folder(storage, results_dir) as results:
            tuner = tune.Tuner(trainable, param_space={"config": tune.grid_search(jsons)},
                               run_config=tune.RunConfig(name=f"{file.study}-ablation", storage_path=str(results),
                                                         verbose=0, callbacks=[TrialProgress(file.study)]))  # fmt: skip
            outcomes = list(tuner.fit())
        for result in outcomes:
            metrics, name = result.metrics or {}, todo[jsons.index(result.config["config"])]
            if result.error or "error" in metrics or metrics.get("epoch") != file.proxy.epochs:
                raise ConvspaceError(f"ablation: {name} failed ({metrics.get('error') or result.error}); rerun to retry it")
            cfg = ArchConfig.from_json(result.config["config"])
            cost = arch_cost(cfg)
            # the search's record of a trained trial, so that pareto and export work on this study too
            study.add_trial(optuna.trial.create_trial(
                values=[float(metrics[ACC]), float(cost.flops)],
                user_attrs={"preset": name, "config": cfg.to_json(), "hash": cfg.hash, "params": cost.params, "flops": cost.flops,
                            STATUS: "trained", "epochs": file.proxy.epochs, "proxy": file.proxy.to_dict(),
                            "train_seconds": metrics.get("train_seconds")},
            ))  # fmt: skip
    by_name = {t.user_attrs["preset"]: t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}
    return [{"preset": n, "proxy_accuracy": by_name[n].values[0], "reference": ref, "gflops": by_name[n].values[1] / 1e9}
            for n, ref in file.reference.items()]  # fmt: skip


def kendall_tau(rows: list[dict[str, Any]]) -> float:
    """Rank agreement between the proxy and the reference accuracies (Kendall's tau-b)."""
    from scipy.stats import kendalltau

    return float(kendalltau([r["proxy_accuracy"] for r in rows], [r["reference"] for r in rows]).statistic)
