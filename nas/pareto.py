"""The Pareto front of a study: feasible, fully trained trials, as rows for tables and JSON."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.storage import open_storage
from space.config import ArchConfig
from space.errors import ConvspaceError


def load_study(name: str, storage: str) -> optuna.Study:
    """An existing study, or a user error naming the studies that exist there."""
    rdb = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)]
    if name not in names:
        raise ConvspaceError(f"study: no study {name!r} in {storage} (studies there: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=rdb)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Non-dominated COMPLETE trials (only fully trained, within-budget trials are ever COMPLETE), by FLOPs."""
    trials = study.best_trials if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) else []
    return sorted(trials, key=lambda t: t.values[1])


def describe(trial: FrozenTrial) -> dict[str, Any]:
    """One row: the numbers and the architecture in a few words."""
    cfg = ArchConfig.from_json(trial.user_attrs["config"])
    blocks = sorted({s.block for s in cfg.stages})
    kernels = sorted({s.kernel for s in cfg.stages})
    return {
        "trial": trial.number,
        "accuracy": trial.values[0] if trial.values else trial.user_attrs.get("proxy_accuracy"),
        "flops": trial.user_attrs["flops"],
        "params": trial.user_attrs["params"],
        "stem": cfg.stem.type,
        "blocks": "/".join(blocks),
        "depths": "-".join(str(s.depth) for s in cfg.stages),
        "widths": "-".join(str(s.width) for s in cfg.stages),
        "kernel": "/".join(map(str, kernels)),
        "norm_act": f"{cfg.norm}/{cfg.act}",
        "epochs": trial.user_attrs.get("epochs"),
        "hash": trial.user_attrs["hash"],
    }


def counts(study: optuna.Study) -> dict[str, int]:
    """How many trials ended which way (trained, stopped, over_budget, duplicate, failed, running)."""
    tally: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = "running" if t.state == TrialState.RUNNING else t.user_attrs.get("status", t.state.name.lower())
        tally[key] = tally.get(key, 0) + 1
    return tally
