"""The Pareto front of a study: feasible, fully trained trials on their mean accuracy over seeds, as rows and counts (its
pictures: nas.front.plots)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.engine.endings import Endings, endings
from nas.engine.ledger import hypervolume
from nas.engine.record import Status, StudyRecord, TrialRecord, counts_toward_total, interrupted, proposed_by
from nas.engine.storage import display_url, make_url_or_none, open_storage
from nas.front.seeds import Scores, noise_floor, seed_scores, within_noise
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


def front(study: optuna.Study, scores: dict[int, Scores] | None = None) -> list[FrozenTrial]:
    """Non-dominated COMPLETE trials (only fully trained, within-budget trials are ever COMPLETE) on (mean accuracy
    over seeds, FLOPs), by FLOPs. By hand: Optuna's `best_trials` reads the stored objective, the first seed's only."""
    scores = seed_scores(study) if scores is None else scores
    trials = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number in scores),
                    key=lambda t: (t.values[1], -scores[t.number].mean))
    kept: list[FrozenTrial] = []
    for t in trials:  # cheapest first: on the front when more accurate than every cheaper trial (equal twins both stay)
        accuracy, best = scores[t.number].mean, scores[kept[-1].number].mean if kept else None
        if best is None or accuracy > best or (accuracy == best and t.values[1] == kept[-1].values[1]):
            kept.append(t)
    return kept


def front_rows(study: optuna.Study) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The front as rows (mean, std and seeds per point, `within_noise` marks) and the study's noise floor
    ({"std", "trials"}: pooled std of the networks trained with several seeds), None before any repeat."""
    scores = seed_scores(study)
    best = front(study, scores)
    floor = noise_floor(scores.values())
    marks = within_noise([scores[t.number] for t in best], floor[0] if floor else None)
    rows = [{**describe(t, scores[t.number]), "within_noise": mark} for t, mark in zip(best, marks)]
    return rows, ({"std": floor[0], "trials": floor[1]} if floor else None)


def study_hypervolume(study: optuna.Study, extra: Iterable[tuple[float, float]] = ()) -> float | None:
    """The hypervolume of the study's fully trained trials (and `extra` points), or None for a study without a budget."""
    budget = StudyRecord(study).budget
    if not budget:
        return None
    flops = {t.number: t.values[1] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values}
    points = [(flops[n], s.mean) for n, s in seed_scores(study).items()]
    return hypervolume([*points, *extra], budget)


def trial_config(trial: FrozenTrial) -> ArchConfig:
    """The network a trial trained (ablation studies from before convspace recorded it have none)."""
    config = TrialRecord(trial).config
    if config is None:
        raise ConvspaceError(f"study: trial {trial.number} holds no network config (an ablation study made before "
                             "convspace recorded one); rerun the ablation into a new study")
    return ArchConfig.from_json(config)


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


def describe(trial: FrozenTrial, scores: Scores | None = None) -> dict[str, Any]:
    """One row: the numbers (accuracy: the mean over `scores`' seeds where given) and the architecture in a few words."""
    cfg = trial_config(trial)  # first: a trial without a config (an old ablation study) is a one-line error
    record = TrialRecord(trial)
    own = trial.values[0] if trial.values else record.proxy_accuracy
    return {
        "trial": trial.number,
        "accuracy": scores.mean if scores else own,
        "accuracy_std": scores.std if scores else None,
        "seeds": len(scores.accuracies) if scores else 1,
        "accuracies": list(scores.accuracies) if scores else [own],
        "flops": record.flops,
        "params": record.params,
        **architecture(cfg),
        "summary": summary(cfg),
        "epochs": record.epochs,
        "hash": record.hash,
    }


def counts(study: optuna.Study) -> dict[str, int]:
    """How many trials ended which way: trained, stopped, failed, over_budget, duplicate, running, and the ones a
    stopped search cut short (`interrupted`, each queued again as a `waiting` trial that the next run trains first).
    over_budget and under_band also count the points the search refused in memory without storing a trial."""
    tally: dict[str, int] = dict(StudyRecord(study).screened)
    for t in study.get_trials(deepcopy=False):
        stored = TrialRecord(t).status
        key = "running" if t.state == TrialState.RUNNING else stored if stored is not None else t.state.name.lower()
        if key == Status.FAILED and interrupted(t):
            key = "interrupted"
        tally[key] = tally.get(key, 0) + 1
    return tally


@dataclass
class FrontReport:
    """What `pareto` shows of a study, and the dashboard's study note with it: the front (mean, std and seeds per point),
    the noise floor, the hypervolume, the trials by how they ended, and who chose the networks trained."""

    study: str
    budget: int | None
    flops_min: int | None
    rows: list[dict[str, Any]]
    noise: dict[str, Any] | None
    hypervolume: float | None
    endings: Endings
    proposed_by: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """`pareto --json`: the study, its band, the front, the hypervolume, the noise floor, and the trials by how they ended
        (`trials`: ENDINGS keys; `refused`: why, by status) and by who chose them (`proposed_by`)."""
        return {"study": self.study, "budget": self.budget, "flops_min": self.flops_min, "front": self.rows, "hypervolume": self.hypervolume,
                "noise": self.noise, "trials": self.endings.counts, "refused": {str(k): v for k, v in self.endings.refused.items()},
                "proposed_by": self.proposed_by}


def front_report(study: optuna.Study) -> FrontReport:
    """The front and everything said beside it (a trial without a config is a one-line error, raised first)."""
    rows, noise = front_rows(study)
    record = StudyRecord(study)
    return FrontReport(study.study_name, record.budget, record.flops_min or None, rows, noise,
                       study_hypervolume(study), endings(study.get_trials(deepcopy=False), record), proposers(study))


def proposers(study: optuna.Study) -> dict[str, int]:
    """The trials that trained (to the end, stopped early or failed by their own fault), by who chose their network:
    sampler, warm_start, random, retry (`nas.engine.record.proposed_by`)."""
    tally: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state != TrialState.RUNNING and counts_toward_total(t):
            who = proposed_by(t)
            tally[who] = tally.get(who, 0) + 1
    return tally
