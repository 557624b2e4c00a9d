"""How a study's trials ended, as every view says it: the one table of endings (words and colour), each trial's ending,
the counts and links of a whole study (a trial cut short and its retry, a trained trial and its repeats), and the
summaries and sentences the live panel, `pareto` (table and JSON), the dashboard's notes and the plots print.

Why apart from nas.engine.record: the record is what a trial stores; this is what a person reads of it. Every fact comes from
the record (`TrialRecord`, `StudyRecord`), none from the trials' attributes directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from nas.engine.record import INTERRUPTED, NEVER_TRAINED, TIME_LIMIT, Status, StudyRecord, TrialRecord, interrupted


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
    "repeat": Ending("trained again with another seed", "#17becf"),  # `confirm`: a trained network trained again (nas.front.seeds)
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


def stopped_ending(stop_reason: str | None) -> str:
    """The ENDINGS key of a trial stopped early: by the time limit, else by the scheduler."""
    return "stopped_time" if stop_reason == TIME_LIMIT else "stopped_scheduler"


def ending(trial: FrozenTrial) -> str:
    """How the trial ended, as a key of ENDINGS (`waiting` and `running` for those that have not)."""
    if trial.state == TrialState.WAITING:
        return "waiting"
    if trial.state == TrialState.RUNNING:
        return "running"
    record = TrialRecord(trial)
    found = record.status
    if found == Status.TRAINED:
        return "trained"
    if found == Status.STOPPED:
        return stopped_ending(record.stop_reason)
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


def endings(trials: Iterable[FrozenTrial], study: StudyRecord | None = None) -> Endings:
    """Count and link the trials of a study (`study`: its record, which holds the refusals stored only as counts)."""
    screened = study.screened if study is not None else {}
    counts = dict.fromkeys(ENDINGS, 0)
    refused: dict[str, int] = dict(screened)
    retried_as: dict[int, int] = {}
    repeats: dict[int, list[tuple[int, int]]] = {}
    waiting: set[int] = set()
    for t in trials:
        key, record = ending(t), TrialRecord(t)
        counts[key] += 1
        if key == "refused":
            refused[str(record.status)] = refused.get(str(record.status), 0) + 1
        elif key == "repeat" and record.repeat_of is not None:
            repeats.setdefault(int(record.repeat_of), []).append((int(record.seed or 0), t.number))
        elif key == "waiting":
            waiting.add(t.number)
        if record.retry_of is not None:
            retried_as[int(record.retry_of)] = t.number
    counts["refused"] += sum(screened.values())
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
    key, record = ending(trial), TrialRecord(trial)
    score = record.proxy_accuracy
    if not isinstance(score, int | float) and key == "trained" and trial.values:
        score = trial.values[0]  # a trained trial's objective is its accuracy
    accuracy = f", accuracy {score:.4f}" if isinstance(score, int | float) else ""
    epochs, planned = record.epochs, (record.proxy or {}).get("epochs")
    of = f" of {planned}" if planned else ""
    if key == "trained":
        text = ENDINGS[key].words + (f" ({epochs} epochs)" if epochs else "") + accuracy
        if found.repeats.get(trial.number):
            text += "; repeated with " + ", ".join(f"seed {seed} as trial {n}" for seed, n in found.repeats[trial.number])
    elif key in ("stopped_scheduler", "stopped_time"):
        by = f" ({record.stop_reason})" if key == "stopped_scheduler" and record.stop_reason else ""
        when = (f" after epoch {epochs}{of}{accuracy}" if epochs and accuracy else f" after epoch {epochs}{of} (no accuracy recorded)" if epochs
                else " before its first epoch ended (no accuracy)")
        text = ENDINGS[key].words + by + when
    elif key == "failed":
        text = f"failed: {record.fail_reason if record.fail_reason is not None else 'no reason recorded'}"
    elif key == "cut_short":
        why = str(record.fail_reason or "").removeprefix(f"{INTERRUPTED}: ")
        text = ENDINGS[key].words + (f" ({why})" if why else "")
        retry = found.retried_as.get(trial.number)
        if retry is not None:
            text += (f", queued again as trial {retry} (it trains first on the next run)" if retry in found.waiting
                     else f" and retried as trial {retry}")
    elif key == "repeat":
        text = f"repeat of trial {record.repeat_of} with seed {record.seed}{accuracy}"
    elif key == "refused":
        text = f"{ENDINGS[key].words}: {REFUSALS.get(str(record.status), str(record.status))}"
    elif key == "waiting":
        text = "queued: the next run trains it first" + (f" (warm start: {record.warm_start})" if record.warm_start else "")
    else:
        text = ENDINGS[key].words
    if record.retry_of is not None:
        text += f"; a retry of trial {record.retry_of}" + (f", which {record.retry_reason}" if record.retry_reason else "")
    return text
