"""The trial record: how a trial of a convspace study ended, and the attributes every such trial carries.

Optuna stores a trial's state (COMPLETE, PRUNED, FAIL, ...); our `status` user attribute says why, since PRUNED
alone cannot tell a sample refused before training from a trial stopped early. The values are plain strings
in storage (a `StrEnum`), so studies written before this module existed read the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Ending:
    """One way a trial can end, as every view says it (live panel, `pareto`, the dashboard, plots, JSON keys)."""

    words: str  # what follows a count or starts a trial's sentence: "3 trained to the end", "trial 7 trained to the end"
    colour: str  # one colour for the terminal (rich) and the plots (matplotlib) alike: both read hex


# The one table of how trials end. Keys are the JSON keys; the order is the order every summary lists them in.
ENDINGS: dict[str, Ending] = {
    "trained": Ending("trained to the end", "#1f77b4"),
    "stopped_scheduler": Ending("stopped early by the scheduler", "#7f7f7f"),
    "stopped_time": Ending("stopped early by the time limit", "#bcbd22"),
    "failed": Ending("failed", "#d62728"),
    # Ctrl-C, the time budget or a dead driver stopped it, through no fault of its network: trained again as a new trial
    "cut_short": Ending("cut short", "#9467bd"),
    "repeat": Ending("trained again with another seed", "#17becf"),  # `confirm`: a trained network trained again (nas.seeds)
    "running": Ending("training now", "#2ca02c"),
    "waiting": Ending("queued", "#e377c2"),  # waits to train (a retry, a warm start): the next run trains it first
    "refused": Ending("refused before training", "#8c564b"),  # why: REFUSALS
}
TRAINED_ENDINGS = ("trained", "stopped_scheduler", "stopped_time", "failed")  # how a training that ran ended
# Why a sample was refused before training (the status of a trial in NEVER_TRAINED), as it reads after a count.
REFUSALS: dict[str, str] = {
    Status.OVER_BUDGET: "over the budget",
    Status.UNDER_BAND: "under --flops-min",
    Status.INFEASIBLE: "that no scale fits into the band",
    Status.UNFIT: "too dilated for the proxy resolution",
    Status.DUPLICATE: "already evaluated",
    Status.SURPLUS: "past --trials (another driver took the last one)",
}
PROPOSER_WORDS = {"sampler": "by the sampler", "warm_start": "from the warm start", "random": "by random search",
                  "retry": "retraining a trial cut short"}


def ending(trial: FrozenTrial) -> str:
    """How the trial ended, as a key of ENDINGS (`waiting` and `running` for those that have not)."""
    if trial.state == TrialState.WAITING:
        return "waiting"
    if trial.state == TrialState.RUNNING:
        return "running"
    found = status(trial)
    if found == Status.TRAINED:
        return "trained"
    if found == Status.STOPPED:
        return "stopped_time" if trial.user_attrs.get("stop_reason") == "time limit" else "stopped_scheduler"
    if found == Status.FAILED:
        return "cut_short" if interrupted(trial) else "failed"
    if found == Status.REPEAT:
        return "repeat"
    if found in NEVER_TRAINED:
        return "refused"
    # no status: a study written by other code (Optuna's own states then say it)
    return {TrialState.COMPLETE: "trained", TrialState.PRUNED: "stopped_scheduler"}.get(trial.state, "failed")


@dataclass
class Endings:
    """How a study's trials ended: counts by ENDINGS key and by refusal, and the links between trials (a trial cut short
    and its retry, a trained trial and its repeats), so that each trial can say which trial it belongs to."""

    counts: dict[str, int]
    refused: dict[str, int]  # by Status (REFUSALS), with the points an earlier bridge refused without storing a trial
    retried_as: dict[int, int]  # trial cut short -> the trial that trains its network again
    repeats: dict[int, list[tuple[int, int]]]  # trained trial -> (seed, trial number) of each repeat
    waiting: set[int]  # numbers of the trials queued


def endings(trials: Iterable[FrozenTrial], study_user_attrs: dict[str, Any] | None = None) -> Endings:
    """Count and link the trials of a study (`study_user_attrs`: its refusals stored only as counts)."""
    counts = dict.fromkeys(ENDINGS, 0)
    refused: dict[str, int] = dict(screened_counts(study_user_attrs or {}))
    retried_as: dict[int, int] = {}
    repeats: dict[int, list[tuple[int, int]]] = {}
    waiting: set[int] = set()
    for t in trials:
        key = ending(t)
        counts[key] += 1
        if key == "refused":
            refused[str(status(t))] = refused.get(str(status(t)), 0) + 1
        elif key == "repeat" and "repeat_of" in t.user_attrs:
            repeats.setdefault(int(t.user_attrs["repeat_of"]), []).append((int(t.user_attrs.get("seed", 0)), t.number))
        elif key == "waiting":
            waiting.add(t.number)
        if "retry_of" in t.user_attrs:
            retried_as[int(t.user_attrs["retry_of"])] = t.number
    counts["refused"] += sum(screened_counts(study_user_attrs or {}).values())
    return Endings(counts, refused, retried_as, {n: sorted(r) for n, r in repeats.items()}, waiting)


def _numbers(numbers: list[int]) -> str:
    return ("trial " if len(numbers) == 1 else "trials ") + ", ".join(map(str, sorted(numbers)))


Parts = list[tuple[str, str | None]]  # a summary as (text, ENDINGS key or None): plain text joins them, a terminal colours them


def ended_parts(counts: dict[str, int]) -> Parts:
    """The trainings that ran, by how they ended (see `ended_words`)."""
    by_scheduler, by_time = counts.get("stopped_scheduler", 0), counts.get("stopped_time", 0)
    if by_scheduler and by_time:
        stopped: Parts = [(f"{by_scheduler + by_time} stopped early (", None), (f"{by_scheduler} by the scheduler", "stopped_scheduler"),
                          (", ", None), (f"{by_time} by the time limit", "stopped_time"), (")", None)]
    elif by_time:
        stopped = [(f"{by_time} {ENDINGS['stopped_time'].words}", "stopped_time")]
    else:
        stopped = [(f"{by_scheduler} {ENDINGS['stopped_scheduler'].words}", "stopped_scheduler")]
    return [(f"{counts.get('trained', 0)} {ENDINGS['trained'].words}", "trained"), (", ", None), *stopped, (", ", None),
            (f"{counts.get('failed', 0)} {ENDINGS['failed'].words}", "failed")]


def ended_words(counts: dict[str, int]) -> str:
    """`9 trained to the end, 3 stopped early (2 by the scheduler, 1 by the time limit), 0 failed`: trainings that ran."""
    return "".join(text for text, _ in ended_parts(counts))


def study_parts(found: Endings) -> Parts:
    """Every trial of a study by how it ended (see `study_words`)."""
    parts = ended_parts(found.counts)
    if found.counts["cut_short"]:
        retried = sorted(r for r in found.retried_as.values() if r not in found.waiting)
        queued = sorted(r for r in found.retried_as.values() if r in found.waiting)
        links = ([f"retried as {_numbers(retried)}"] if retried else []) + ([f"queued again as {_numbers(queued)}"] if queued else [])
        parts += [(", ", None), (f"{found.counts['cut_short']} {ENDINGS['cut_short'].words}" + (f" ({'; '.join(links)})" if links else ""),
                                 "cut_short")]
    if found.counts["repeat"]:
        parts += [(", ", None), (f"{found.counts['repeat']} {ENDINGS['repeat'].words} (confirm)", "repeat")]
    if found.counts["running"]:
        parts += [(", ", None), (f"{found.counts['running']} {ENDINGS['running'].words}", "running")]
    if found.counts["waiting"]:
        parts += [(", ", None), (f"{found.counts['waiting']} {ENDINGS['waiting'].words} to train first on the next run", "waiting")]
    return parts


def study_words(found: Endings) -> str:
    """Every trial of a study by how it ended: the trainings that ran, then those cut short (with the trials that retry
    them), the repeats, those training now and those queued; no trial is said to be queued that is not."""
    return "".join(text for text, _ in study_parts(found))


def refused_words(refused: dict[str, int]) -> str:
    """`143 over the budget, 2 already evaluated` (or `none`): samples refused before training, by why."""
    return ", ".join(f"{refused[r]} {words}" for r, words in REFUSALS.items() if refused.get(r)) or "none"


def proposed_words(proposed: dict[str, int]) -> str:
    """`10 by the sampler, 2 warm start` (or `none`): who chose the networks trained."""
    ordered = sorted(proposed.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} {PROPOSER_WORDS.get(who, who)}" for who, n in ordered if n) or "none"


def how_it_ended(trial: FrozenTrial, found: Endings) -> str:
    """One trial's ending as a sentence, saying which trial it belongs to: `stopped early by the time limit after epoch 2
    of 3, accuracy 0.9400`, `cut short (...) and retried as trial 14`, `repeats trial 3 with seed 1, accuracy 0.9581`."""
    key, attrs = ending(trial), trial.user_attrs
    score = attrs.get("proxy_accuracy")
    if not isinstance(score, int | float) and key == "trained" and trial.values:
        score = trial.values[0]  # a trained trial's objective is its accuracy
    accuracy = f", accuracy {score:.4f}" if isinstance(score, int | float) else ""
    epochs, planned = attrs.get("epochs"), (attrs.get("proxy") or {}).get("epochs")
    of = f" of {planned}" if planned else ""
    if key == "trained":
        text = ENDINGS[key].words + (f" ({epochs} epochs)" if epochs else "") + accuracy
        if found.repeats.get(trial.number):
            text += "; repeated with " + ", ".join(f"seed {seed} as trial {n}" for seed, n in found.repeats[trial.number])
    elif key in ("stopped_scheduler", "stopped_time"):
        by = f" ({attrs['stop_reason']})" if key == "stopped_scheduler" and attrs.get("stop_reason") else ""
        when = (f" after epoch {epochs}{of}{accuracy}" if epochs and accuracy else f" after epoch {epochs}{of} (no accuracy recorded)" if epochs
                else " before its first epoch ended (no accuracy)")
        text = ENDINGS[key].words + by + when
    elif key == "failed":
        text = f"failed: {attrs.get('fail_reason', 'no reason recorded')}"
    elif key == "cut_short":
        why = str(attrs.get("fail_reason", "")).removeprefix(f"{INTERRUPTED}: ")
        text = ENDINGS[key].words + (f" ({why})" if why else "")
        retry = found.retried_as.get(trial.number)
        if retry is not None:
            text += (f", queued again as trial {retry} (it trains first on the next run)" if retry in found.waiting
                     else f" and retried as trial {retry}")
    elif key == "repeat":
        text = f"repeat of trial {attrs.get('repeat_of')} with seed {attrs.get('seed')}{accuracy}"
    elif key == "refused":
        text = f"{ENDINGS[key].words}: {REFUSALS.get(str(status(trial)), str(status(trial)))}"
    elif key == "waiting":
        text = "queued: the next run trains it first" + (f" (warm start: {attrs['warm_start']})" if attrs.get("warm_start") else "")
    else:
        text = ENDINGS[key].words
    if "retry_of" in attrs:
        text += f"; a retry of trial {attrs['retry_of']}" + (f", which {attrs['retry_reason']}" if attrs.get("retry_reason") else "")
    return text


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
