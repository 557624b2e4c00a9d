"""The trial record: how a trial of a convspace study ended, and the attributes every such trial carries.

Optuna stores a trial's state (COMPLETE, PRUNED, FAIL, ...); our `status` user attribute says why, since PRUNED
alone cannot tell a sample refused before training from a trial stopped early. The values are plain strings
in storage (a `StrEnum`), so studies written before this module existed read the same.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from space.config import ArchConfig
from space.cost import Cost

ACC, FLOPS = "acc", "flops"  # Tune's metric names; FLOPS is also the trial attribute with the target's FLOPs
STATUS = "status"
EPOCH_ACCURACIES = "epoch_accuracies"  # each epoch's proxy accuracy: reported to Tune, kept on the trial
OVER_BUDGET_CONSTRAINT = "flops_over_budget"  # Optuna constraint of every sampled point: FLOPs minus the budget
UNDER_BAND_CONSTRAINT = "flops_under_band"  # with --flops-min: that floor minus FLOPs
INTERRUPTED = "interrupted"  # fail_reason prefix of trials a stopped search or a dead driver cut short


class Status(StrEnum):
    """How a trial ended (its `status` attribute)."""

    TRAINED = "trained"  # every epoch: COMPLETE, on the front if non-dominated
    STOPPED = "stopped"  # stopped early (ASHA or the time limit): PRUNED, its partial accuracy kept
    FAILED = "failed"  # raised, or its worker died: FAIL with fail_reason
    OVER_BUDGET = "over_budget"  # refused before training: PRUNED
    UNDER_BAND = "under_band"  # refused before training: below --flops-min, PRUNED
    DUPLICATE = "duplicate"  # refused before training: its config was already evaluated
    SURPLUS = "surplus"  # refused before training: another driver took the last of --trials
    UNFIT = "unfit"  # refused before training: a dilated conv would pad past its map at the proxy resolution
    INFEASIBLE = "infeasible"  # refused before training: no scale of its shape lands in the band (space.fitting)
    REPEAT = "repeat"  # a trained trial's network trained again with another seed (`confirm`): PRUNED (nas.seeds)


NEVER_TRAINED = (Status.OVER_BUDGET, Status.UNDER_BAND, Status.INFEASIBLE, Status.UNFIT, Status.DUPLICATE, Status.SURPLUS)
PROPOSED_BY = "proposed_by"  # who chose a trial's network: one of PROPOSERS
PROPOSERS = ("sampler", "warm_start", "random", "retry")
# Study user attrs counting the points an earlier bridge drew in memory and refused without storing a trial (studies
# made before proposals were fitted to the budget): the study's count of rejected samples is the stored ones plus these.
SCREENED = {Status.OVER_BUDGET: "rejected_over_budget", Status.UNDER_BAND: "rejected_under_band", Status.UNFIT: "rejected_unfit"}


def screened_counts(study_user_attrs: dict[str, Any]) -> dict[str, int]:
    """Points refused in memory, by status (over_budget, under_band), from the study's user attrs."""
    return {status: int(study_user_attrs[key]) for status, key in SCREENED.items() if study_user_attrs.get(key)}


def status(trial: FrozenTrial) -> str | None:
    """The trial's status attribute (None while it is being sampled or waits to be retried)."""
    return trial.user_attrs.get(STATUS)


def proposed_by(trial: FrozenTrial) -> str:
    """Who chose the trial's network (PROPOSERS). Trials stored before the attribute: a random in-band draw that replaced
    an out-of-band proposal (`screened`), a retry, or the sampler."""
    if PROPOSED_BY in trial.user_attrs:
        return str(trial.user_attrs[PROPOSED_BY])
    if trial.user_attrs.get("screened"):
        return "random"
    return "retry" if "retry_of" in trial.user_attrs else "sampler"


def interrupted(trial: FrozenTrial) -> bool:
    """Cut short through no fault of its config (Ctrl-C, the time budget, a dead driver): its config is queued again."""
    return status(trial) == Status.FAILED and str(trial.user_attrs.get("fail_reason", "")).startswith(INTERRUPTED)


def counts_toward_total(trial: FrozenTrial) -> bool:
    """Trials that trained to an end (completed, stopped early, failed by their own fault) or are training now."""
    if trial.state == TrialState.RUNNING:
        return bool(trial.user_attrs.get("accepted"))
    return status(trial) in (Status.TRAINED, Status.STOPPED, Status.FAILED) and not interrupted(trial)


def holds_config(trial: FrozenTrial) -> bool:
    """Whether this trial's config has been (or is being) evaluated, so no other trial trains it."""
    if trial.state == TrialState.RUNNING:
        return bool(trial.user_attrs.get("accepted"))
    return trial.state == TrialState.COMPLETE or status(trial) == Status.STOPPED


def network_attrs(cfg: ArchConfig, cost: Cost) -> dict[str, Any]:
    """What every trial records of its network: the config (JSON), its hash, and the target's FLOPs and params."""
    return {"config": cfg.to_json(), "hash": cfg.hash, FLOPS: cost.flops, "params": cost.params}


def outcome_attrs(result: dict[str, Any], *, epochs: int, proxy_epochs: int, scheduler: str | None = None) -> dict[str, Any]:
    """What a finished training adds: status (and why it stopped or failed), epochs, accuracies and seconds.

    `scheduler` names the early stopping that ran (pareto-asha, asha): the stop_reason of a trial it stopped."""
    # One accuracy per epoch trained, so a stopped trial's history can be read and the rungs audited.
    attrs: dict[str, Any] = {"epochs": epochs, EPOCH_ACCURACIES: [float(a) for a in result.get(EPOCH_ACCURACIES) or []]}
    if ACC in result:
        attrs["proxy_accuracy"] = float(result[ACC])
        attrs["train_seconds"] = round(float(result.get("train_seconds", 0.0)), 3)
        # from entering the trainable: also counts model build and data, not dispatch or worker start
        attrs["trainable_seconds"] = round(float(result.get("trainable_seconds", 0.0)), 3)
    if "error" in result or (ACC not in result and not result.get("time_limited")):
        attrs[STATUS] = Status.FAILED
        attrs["fail_reason"] = result.get("error") or "the trial process died (see the Ray trial log)"
    elif epochs >= proxy_epochs:
        attrs[STATUS] = Status.TRAINED
    else:
        attrs[STATUS] = Status.STOPPED
        attrs["stop_reason"] = "time limit" if result.get("time_limited") else (scheduler or "stopped early")
    return attrs
