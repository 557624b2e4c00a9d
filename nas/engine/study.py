"""A convspace study: created or resumed with an identity check, and recovered after a crash.

A study's scores are comparable only if every trial was proxy-trained alike, so a study records the settings
that define it (its identity) when created and refuses to be resumed with others, naming each difference.
The search and the ablation open their studies here alike.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from typing import Any

import numpy as np
import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas.engine.record import INTERRUPTED, STATUS, Status, StudyRecord, counts_toward_total, write_stored
from nas.engine.storage import open_storage, requeue
from space.errors import ConvspaceError

OBJECTIVES = ["proxy_accuracy", "flops"]  # maximised, minimised


def open_study(name: str, url: str, identity: dict[str, Any], *, sampler: optuna.samplers.BaseSampler | None = None,
               heartbeat: tuple[int, int] | None = None, attrs: dict[str, Any] | None = None) -> tuple[optuna.Study, RDBStorage]:
    """Create or resume study `name`; refuse to resume one whose identity differs from `identity`.

    `attrs` are written once, when the study is created (e.g. the budget). The storage comes back too: failing a
    trial of a dead driver and heartbeats go through its public API."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the commands show progress themselves
    storage = open_storage(url, heartbeat=heartbeat)
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"], sampler=sampler,
                                load_if_exists=True)
    identity = json.loads(json.dumps(identity))  # as it reads back from storage (tuples become lists)
    record = StudyRecord(study)
    stored = upgraded(record.identity)
    if stored is None:
        study.set_metric_names(OBJECTIVES)
        record.write({"identity": identity})
        if sampler is not None:  # the analysis warns when the trials were not drawn at random (nas.analysis.design_space)
            record.write({"sampler": type(sampler).__name__})
        record.write(attrs or {})
    elif stored != identity:
        raise ConvspaceError(settings_mismatch(name, changed_settings(stored, identity)))
    elif sampler is not None:
        record_sampler(record, type(sampler).__name__)
    return study, storage


def record_sampler(record: StudyRecord, used: str) -> None:
    """A resumed search may change --sampler (a random sweep, then TPE): the study then says every sampler that chose
    its trials, in order ("RandomSampler, then TPESampler"), so that `analyze` no longer calls the sample random."""
    samplers = record.sampler.split(", then ") if record.sampler else []
    if samplers and samplers[-1] != used:
        record.write({"sampler": ", then ".join([*samplers, used])})


def upgraded(identity: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored identity in today's terms: one written before the proxy could augment trained without augmentation."""
    if identity and isinstance(identity.get("proxy"), dict) and "augment" not in identity["proxy"]:
        return {**identity, "proxy": {**identity["proxy"], "augment": False}}
    return identity


FLOPS_SETTINGS = ("budget", "flops_min")  # identity keys counted in FLOPs: shown in GFLOPs
MISMATCH_ITEMS = 3  # settings a resume refusal lists; more are counted on the last line


def settings_mismatch(name: str, changes: list[str], width: int | None = None) -> str:
    """The refusal to resume a study with other settings: a head line and at most MISMATCH_ITEMS short lines (each fit
    to the terminal, `error: ` included), so that the user sees at a glance what to change."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    if len(changes) > MISMATCH_ITEMS:
        rest = changes[MISMATCH_ITEMS - 1:]  # by name only: each item reads `name: what changed`
        changes = [*changes[:MISMATCH_ITEMS - 1], f"and {len(rest)} more: {', '.join(c.split(':')[0] for c in rest)}"]
    head = f"study: {name!r} was made with other settings (use them, or pick a new --study name):"
    return "\n".join([_fit(head, width - len("error: ")), *(_fit(f"  {change}", width) for change in changes)])


def _fit(line: str, width: int) -> str:
    """The line, cut to `width - 1` characters (a line of exactly the terminal's width wraps on some terminals)."""
    return line if len(line) < width else line[:max(width - 2, 8)] + "…"


def plain(key: str, value: Any) -> str:
    """A setting's value as a person writes it: FLOPs in GFLOPs, on/off, `all` images, lists without quotes."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if key in FLOPS_SETTINGS and isinstance(value, (int, float)):
        return f"{value / 1e9:.4g} GFLOPs"
    if value is None:
        return "all" if key == "train_images" else "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(plain("", v) for v in value) + "]"
    return str(value)


def changed_settings(stored: dict[str, Any], asked: dict[str, Any], prefix: str = "") -> list[str]:
    """Each setting that differs, as `proxy.epochs: 3 in the study, 5 now` (budgets in GFLOPs), so the user sees what
    to change."""
    changes = []
    for key in sorted(set(stored) | set(asked)):
        old, new = stored.get(key, "unset"), asked.get(key, "unset")
        if key == "space_dims" and isinstance(old, dict) and isinstance(new, dict):  # one short item, not a dump of two spaces
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if differ:
                named = ", ".join(differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
                changes.append(f"space dimensions: {named} differ (the space changed since the study was made)")
        elif key == "space_scale" and not prefix:
            changes.append(f"space scale: {new if new != 'unset' else 'absolute'} now, {old if old != 'unset' else 'absolute'} "
                           "in the study (shipped spaces now fit widths to the budget)")
        elif isinstance(old, dict) and isinstance(new, dict):
            changes += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {plain(key, old)} in the study, {plain(key, new)} now")
    return changes


def fail_and_requeue(study: optuna.Study, storage: RDBStorage, number: int, params: dict[str, Any], why: str) -> None:
    """A trial that could not finish through no fault of its config: FAIL it and queue its parameters again.

    Through the storage: Optuna's trial objects give no public way to write attributes of a trial that another
    process (a dead driver) asked for."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)
    write_stored(storage, trial_id, {STATUS: Status.FAILED, "fail_reason": f"{INTERRUPTED}: {why}"})
    storage.set_trial_state_values(trial_id, TrialState.FAIL)
    requeue(study, number, params, why)


def recover(study: optuna.Study, storage: RDBStorage, *, sole_driver: bool) -> int:
    """Trials a dead driver left RUNNING, failed and queued again: all of them at once when this driver holds the
    study alone (a SQLite lock), else those whose heartbeat went stale. Returns how many."""
    if sole_driver:
        stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        for trial in stale:
            fail_and_requeue(study, storage, trial.number, trial.params, "its driver stopped")
        return len(stale)
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - failed


def trained_count(study: optuna.Study) -> int:
    """How many trials count toward --trials (across every driver of the study)."""
    return sum(counts_toward_total(t) for t in study.get_trials(deepcopy=False))


DRIVER_CLAIM = "convspace:driver:"  # study system attrs `convspace:driver:<n>`: the token of the n-th driver to open it


def claim_driver(storage: RDBStorage, study_id: int, *, settle: float = 0.1) -> int:
    """This driver's number among all that opened the study (0 for the first): the lowest unclaimed number.

    Optuna's storage has no compare-and-set, so a claim is written, then read back after `settle` seconds: of two
    drivers that started together and both wrote the same number, the one whose token was overwritten takes the
    next number (the other's write lands within milliseconds of its read, well inside `settle`)."""
    token, n = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}", 0
    while True:
        key = f"{DRIVER_CLAIM}{n}"
        if key not in storage.get_study_system_attrs(study_id):
            storage.set_study_system_attr(study_id, key, token)
            time.sleep(settle)
            if storage.get_study_system_attrs(study_id).get(key) == token:
                return n
        n += 1


def driver_seed(seed: int, driver: int) -> int:
    """The sampler seed of the study's `driver`-th driver: --seed itself for the first (a lone search is reproducible,
    and so is each resume of it: the n-th run gets number n), an independent stream of --seed for each other one, so
    drivers sharing a study do not propose the same points in lockstep."""
    return seed if driver == 0 else int(np.random.SeedSequence([seed, driver]).generate_state(1)[0])
