"""The Pareto front of a study: feasible, fully trained trials, as rows for tables and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.storage import display_url, make_url_or_none, open_storage
from space.config import ArchConfig
from space.errors import ConvspaceError


def load_study(name: str, storage: str) -> optuna.Study:
    """An existing study, or a user error naming the studies that exist there (a missing SQLite file is not created)."""
    url = make_url_or_none(storage)
    if url is not None and url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise ConvspaceError(f"study: no study {name!r}: {url.database} does not exist")
    rdb = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(rdb, include_best_trial=False)]
    if name not in names:
        raise ConvspaceError(f"study: no study {name!r} in {display_url(storage)} (studies there: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=name, storage=rdb)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """Non-dominated COMPLETE trials (only fully trained, within-budget trials are ever COMPLETE), by FLOPs."""
    trials = study.best_trials if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) else []
    return sorted(trials, key=lambda t: t.values[1])


def trial_config(trial: FrozenTrial) -> ArchConfig:
    """The network a trial trained (ablation studies from before convspace recorded it have none)."""
    if "config" not in trial.user_attrs:
        raise ConvspaceError(f"study: trial {trial.number} holds no network config (an ablation study made before "
                             "convspace recorded one); rerun the ablation into a new study")  # fmt: skip
    return ArchConfig.from_json(trial.user_attrs["config"])


def architecture(cfg: ArchConfig) -> dict[str, str]:
    """A network in a few words: stem, block families, depths, widths, kernels, norm/act."""
    return {
        "stem": cfg.stem.type,
        "blocks": "/".join(sorted({s.block for s in cfg.stages})),
        "depths": "-".join(str(s.depth) for s in cfg.stages),
        "widths": "-".join(str(s.width) for s in cfg.stages),
        "kernel": "/".join(map(str, sorted({s.kernel for s in cfg.stages}))),
        "norm_act": f"{cfg.norm}/{cfg.act}",
    }


def summary(cfg: ArchConfig) -> str:
    """One line for tables and progress: `convnext, patchify stem, depths 3-3-9-3, widths 96-...-768, k7, ln/gelu`."""
    a = architecture(cfg)
    return f"{a['blocks']}, {a['stem']} stem, depths {a['depths']}, widths {a['widths']}, k{a['kernel']}, {a['norm_act']}"


def describe(trial: FrozenTrial) -> dict[str, Any]:
    """One row: the numbers and the architecture in a few words."""
    return {
        "trial": trial.number,
        "accuracy": trial.values[0] if trial.values else trial.user_attrs.get("proxy_accuracy"),
        "flops": trial.user_attrs["flops"],
        "params": trial.user_attrs["params"],
        **architecture(trial_config(trial)),
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


def plot(study: optuna.Study, path: str, budget: int | None) -> None:
    """PNG of every trial by GFLOPs and proxy accuracy: trained, stopped early, over budget; the front and the budget line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, tuple[list[float], list[float]]] = {}
    for t in study.get_trials(deepcopy=False):
        status = t.user_attrs.get("status")
        if "flops" not in t.user_attrs or status not in ("trained", "stopped", "over_budget"):
            continue
        accuracy = t.values[0] if t.values else t.user_attrs.get("proxy_accuracy", 0.0)
        xs, ys = groups.setdefault(status, ([], []))
        xs.append(t.user_attrs["flops"] / 1e9)
        ys.append(accuracy or 0.0)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"trained": dict(c="tab:blue", marker="o", label="trained"),
              "stopped": dict(c="tab:gray", marker="s", alpha=0.6, label="stopped early (ASHA)"),
              "over_budget": dict(c="tab:red", marker="x", alpha=0.5, label="over budget (not trained, accuracy 0)")}  # fmt: skip
    for status, (xs, ys) in groups.items():
        ax.scatter(xs, ys, s=22, **styles[status])
    best = front(study)
    if best:
        ax.plot([t.values[1] / 1e9 for t in best], [t.values[0] for t in best], "-o", c="tab:orange", lw=2, ms=7,
                label="Pareto front", zorder=3)  # fmt: skip
    if budget:
        ax.axvline(budget / 1e9, ls="--", c="k", lw=1, label=f"budget {budget / 1e9:g} GFLOPs")
    ax.set_xlabel("GFLOPs of the target network (fvcore)")
    ax.set_ylabel("proxy validation top-1")
    ax.set_title(f"study {study.study_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
