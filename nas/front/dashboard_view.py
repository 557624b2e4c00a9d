"""A study in optuna-dashboard as a person reads it: what `pareto` says, one trial per training, one state per outcome.

The search stores every sampled point as an Optuna trial (TPE learns from the refused ones, and Optuna cannot
sample a point without storing it), so a search of 12 trainings leaves a study of over a hundred trials, most of
them samples refused before training that optuna-dashboard would show with the same "Pruned" chip as the trials
ASHA stopped. The dashboard is therefore served through `TrainedTrialsView`, a read view of the storage that lists
only the trials whose network was (or is being, or waits to be) trained, so that each chip means one thing: a trial
cut short and trained again is listed once, as its retry; a repeat with another seed is a seed of a listed trial,
whose objective shows the mean over its seeds (as `pareto` does). The study itself is untouched: `pareto`, `export`
and Optuna see every trial.

Why a module of its own: the view answers Optuna's storage interface (every call the dashboard makes), which is
neither writing notes (nas.front.dashboard_notes) nor serving (nas.front.dashboard).
"""

from __future__ import annotations

import json
import math
from collections.abc import Container, Iterable, Sequence
from typing import Any

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from nas.engine.endings import ENDINGS, PROPOSER_WORDS, Endings, ending, endings, how_it_ended, refused_words, study_parts
from nas.engine.record import Status, StudyRecord, TrialRecord
from nas.front.pareto import summary
from space.cost import PAPER_CLASSES, PAPER_RESOLUTION
from space.errors import ConvspaceError

# What the view lists: trials whose network trained, trains now or waits to (a retry, a warm start).
LISTED = ("trained", "stopped_scheduler", "stopped_time", "failed", "running", "waiting")
# What each chip the dashboard draws means once the others are left out.
STATES = {"trained": "Complete", "stopped": "Pruned", "failed": "Fail"}
_METRIC_NAMES = "study:metric_names"  # where Optuna keeps `study.set_metric_names` (optuna-dashboard reads it too)
ENDED = "ended"  # the first user attribute the dashboard shows of a trial: how it ended (nas.engine.endings.how_it_ended)


class TrainedTrialsView(BaseStorage):
    """A storage as the dashboard shows it: trained, stopped, failed, live and queued trials only, FLOPs objectives in
    GFLOPs and accuracies as means over seeds, how each trial ended first among its attributes, a summary of how the
    study's trials ended and its identity in words first among the study's; every write goes to the storage unchanged."""

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = storage
        self._endings: dict[int, Endings] = {}  # per study, from the last full read of its trials
        self._ours: dict[int, bool] = {}

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        """The trials that trained, train or wait to, numbered as in the study (so `export --trial N` matches)."""
        flops_at = _flops_objective(self._storage.get_study_system_attrs(study_id))
        everything = self._storage.get_all_trials(study_id, deepcopy=deepcopy)
        found = endings(everything, StudyRecord.stored(self._storage, study_id))
        self._endings[study_id] = found
        # a study convspace wrote (a storage may hold others)
        self._ours[study_id] = any(TrialRecord(t).status is not None for t in everything)
        means = _seed_means(everything)
        return [_readable(t, found, flops_at, means.get(t.number)) for t in everything
                if ending(t) in LISTED and (states is None or t.state in states)]

    def get_all_studies(self) -> list[FrozenStudy]:
        """The studies, each with how its trials ended and its identity in words first among its user attributes."""
        return [self._readable_study(s) for s in self._storage.get_all_studies()]

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """System attributes with a FLOPs objective renamed GFLOPs, as its values are shown."""
        return _readable_system_attrs(self._storage.get_study_system_attrs(study_id))

    def _readable_study(self, study: FrozenStudy) -> FrozenStudy:
        study_id = study._study_id
        if study_id not in self._endings:
            self.get_all_trials(study_id, deepcopy=False)
        found = self._endings[study_id]
        record = StudyRecord(study)
        ours = record.identity is not None or self._ours[study_id]
        attrs = dict(record.attrs)
        identity = attrs.pop("identity", None)
        if isinstance(identity, dict):  # said in words below (with the band): the raw numbers would shadow them
            for key in ("budget", "flops_min"):
                attrs.pop(key, None)
        summary_attrs = outcome_summary(found, record.budget) if ours else {}
        if isinstance(identity, dict):
            summary_attrs.update(readable_identity(study.study_name, identity))
        return FrozenStudy(
            study.study_name, None, {**summary_attrs, **attrs}, _readable_system_attrs(study.system_attrs),
            study_id, directions=study.directions,
        )

    # Everything else passes through: the dashboard writes notes, fails running trials, deletes studies.
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._storage.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._storage.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._storage.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._storage.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._storage.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._storage.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._storage.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._storage.get_study_user_attrs(study_id)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._storage.create_new_trial(study_id, template_trial)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution: Any) -> None:
        self._storage.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._storage.set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._storage.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._storage.get_trial(trial_id)


def outcome_summary(found: Endings, budget: int | None) -> dict[str, str]:
    """The study's first lines in the dashboard: how its trials ended (the words of `pareto`), and those not listed."""
    trials = "".join(text for text, _ in study_parts(found))
    hidden = [f"{found.counts['cut_short']} {ENDINGS['cut_short'].words} (listed as their retries)"] if found.counts["cut_short"] else []
    if found.counts["repeat"]:
        hidden.append(f"{found.counts['repeat']} {ENDINGS['repeat'].words} (a listed trial's objective is the mean over its seeds)")
    if found.counts["refused"]:
        hidden.append(f"{found.counts['refused']} refused before training: {refused_words(found.refused)}"
                      + (f" (budget {flops_words(budget)})" if budget else ""))
    return {"trials": trials, "not listed": "; ".join(hidden) or "none"}


def readable_identity(study: str, identity: dict[str, Any]) -> dict[str, str]:
    """What a study was made with, in words (its identity is one JSON object in storage): budget, space, proxy, and the
    search command that resumes it."""
    from nas.engine.commands import command, search_args
    from nas.engine.study import upgraded

    identity = upgraded(identity) or identity
    shown: dict[str, str] = {}
    if identity.get("budget"):
        band = f"{flops_words(identity['flops_min'])} to " if identity.get("flops_min") else "up to "
        shown["budget"] = (f"{band}{flops_words(identity['budget'])} (fvcore, counted at {identity.get('cost_resolution', PAPER_RESOLUTION)} px "
                           f"with {identity.get('cost_classes', PAPER_CLASSES)} classes)")
    if identity.get("space"):
        dims = identity.get("space_dims") or {}
        scale = identity.get("space_scale", "absolute")
        shown["space"] = f"{identity['space']} ({len(dims)} dimensions; " + (
            "each network's width fitted to a FLOPs target)" if scale == "fitted" else "widths as sampled)")
    proxy = identity.get("proxy")
    if isinstance(proxy, dict):
        shown["proxy"] = proxy_words(proxy)
    if identity.get("budget") and isinstance(proxy, dict) and not identity.get("kind"):  # a search's study (not fidelity's)
        args, unset = search_args(study, identity)
        shown["resume with"] = command(args) + (f" ({'; '.join(unset)})" if unset else "")
    rest = {k: v for k, v in identity.items() if k not in ("budget", "flops_min", "cost_resolution", "cost_classes", "space", "space_dims",
                                                            "space_scale", "proxy")}
    shown.update({f"identity {k}": json.dumps(v) if isinstance(v, dict | list) else str(v) for k, v in rest.items()})
    return shown


def flops_words(flops: float) -> str:
    """`4.5 GFLOPs`, `5.7 MFLOPs`: a FLOPs count in the unit that reads."""
    return f"{flops / 1e9:.4g} GFLOPs" if flops >= 1e8 else f"{flops / 1e6:.4g} MFLOPs"


def proxy_words(proxy: dict[str, Any]) -> str:
    """`3 epochs of digits at 32 px, 768 images per epoch, batch 64, AdamW lr 0.002, ...`: a proxy training in words."""
    images = f"{proxy['train_images']} images per epoch" if proxy.get("train_images") else "every training image each epoch"
    words = (f"{proxy.get('epochs')} epochs of {proxy.get('data')} at {proxy.get('resolution')} px, {images}, batch {proxy.get('batch_size')}, "
             f"AdamW lr {proxy.get('lr'):g}")
    extras = [f"{k.replace('_', ' ')} {proxy[k]:g}" for k in ("weight_decay", "warmup_epochs", "label_smoothing") if isinstance(proxy.get(k), int | float)]
    if extras:
        words += f" ({', '.join(extras)})"
    if proxy.get("bn_batches"):
        words += f", BatchNorm statistics re-estimated on {proxy['bn_batches']} batches"
    words += ", crops and flips" if proxy.get("augment") else ", no augmentation"
    return words + f", seed {proxy.get('seed', 0)}"


def _flops_objective(system_attrs: dict[str, Any]) -> int | None:
    """Which objective holds FLOPs (the search names its objectives proxy_accuracy, flops)."""
    names = system_attrs.get(_METRIC_NAMES) or []
    return names.index("flops") if "flops" in names else None


def _readable_system_attrs(system_attrs: dict[str, Any]) -> dict[str, Any]:
    names = system_attrs.get(_METRIC_NAMES)
    if not names or "flops" not in names:
        return system_attrs
    return {**system_attrs, _METRIC_NAMES: ["GFLOPs" if n == "flops" else n for n in names]}


def _seed_means(trials: Iterable[FrozenTrial]) -> dict[int, tuple[float, float | None, list[float]]]:
    """Trained trials with repeats (`confirm`): (mean, std, accuracies), the trial's own accuracy first (nas.front.seeds)."""
    trials = list(trials)
    repeats: dict[int, list[tuple[int, float]]] = {}
    for record in map(TrialRecord, trials):
        if record.status == Status.REPEAT and record.repeat_of is not None and record.proxy_accuracy is not None:
            repeats.setdefault(int(record.repeat_of), []).append((int(record.seed or 0), float(record.proxy_accuracy)))
    means = {}
    for t in trials:
        if t.number in repeats and t.state == TrialState.COMPLETE and t.values:
            accuracies = [float(t.values[0]), *(a for _, a in sorted(repeats[t.number]))]
            mean = sum(accuracies) / len(accuracies)
            std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1))
            means[t.number] = (mean, std, accuracies)
    return means


def _readable(trial: FrozenTrial, found: Endings, flops_at: int | None, seeds: tuple[float, float | None, list[float]] | None) -> FrozenTrial:
    """A copy with how it ended, its network in a few words and GFLOPs first among its attributes (the box that shows
    them is short), its accuracy the mean over its seeds where `confirm` trained it again."""
    record = TrialRecord(trial)
    attrs = dict(record.attrs)
    first: dict[str, Any] = {ENDED: how_it_ended(trial, found)}
    if seeds:
        mean, std, accuracies = seeds
        first["accuracy over seeds"] = (f"{mean:.4f} ± {std:.4f} over {len(accuracies)} seeds ({', '.join(f'{a:.4f}' for a in accuracies)}); "
                                        "the objective shown is the mean")
    if record.flops is not None:
        first["gflops"] = round(record.flops / 1e9, 3)
    if record.config is not None:
        network = network_words(record.config)
        if network is not None:  # else shown as stored
            first["architecture"] = network
    if record.names_proposer:
        first["chosen"] = PROPOSER_WORDS.get(record.proposed_by, record.proposed_by)
    first.update({k: attrs.pop(k) for k in ("status", "stop_reason", "proxy_accuracy", "epochs", "fail_reason") if k in attrs})
    shown = record.shown({**first, **attrs})
    values = trial.values
    if seeds and values is not None:
        values = [seeds[0], *values[1:]]
    if flops_at is not None and values is not None:
        values = [v / 1e9 if i == flops_at else v for i, v in enumerate(values)]
    shown.values = values
    return shown


def network_words(config: str) -> str | None:
    """A stored network config in a few words (nas.front.pareto.summary), or None for one this convspace cannot read."""
    from space.config import ArchConfig

    try:
        return summary(ArchConfig.from_json(config))
    except (ConvspaceError, ValueError, TypeError, KeyError):
        return None
