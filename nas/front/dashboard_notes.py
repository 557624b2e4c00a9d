"""The dashboard's notes: what `pareto` prints, as Markdown in optuna-dashboard's own note format.

The study note holds the front table, the noise floor, the hypervolume, the trials by how they ended
(nas.engine.endings.ENDINGS) and who chose the networks; each trial's note says how it ended and which trial it belongs to.
Notes are study system attrs in optuna-dashboard's layout (chunks and a version), written here without importing
optuna_dashboard (seconds of import for `pareto`); the tests hold optuna_dashboard.get_note to them.

Why a module of its own: the words and their storage format change with what `pareto` says, not with how the
dashboard is served (nas.front.dashboard) or how it lists trials (nas.front.dashboard_view).
"""

from __future__ import annotations

import html
import re
from typing import Any

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from nas.engine.endings import PROPOSER_WORDS, Endings, ending, how_it_ended, proposed_words, refused_words, study_parts
from nas.engine.record import TrialRecord
from nas.engine.settings import CONFIRM_SEEDS
from nas.front.dashboard_view import network_words, readable_identity
from nas.front.pareto import FrontReport

# optuna_dashboard._note's storage of a note (importing optuna_dashboard takes seconds: `pareto` writes these itself;
# tests hold optuna_dashboard.get_note to them)
_NOTE_MAX = 2045  # optuna_dashboard's SYSTEM_ATTR_MAX_LENGTH: one system attr holds at most this much of a note


def _note_keys(trial_id: int | None) -> tuple[str, str]:
    """The version key and the text prefix of a study's (None) or a trial's note."""
    if trial_id is None:
        return "dashboard:note_ver", "dashboard:note_str:"
    return f"dashboard:{trial_id}:note_ver", f"dashboard:{trial_id}:note_str:"


def read_note(system_attrs: dict[str, Any], trial_id: int | None) -> str:
    """The note as optuna-dashboard reads it from the study's system attrs ('' when none)."""
    ver, prefix = _note_keys(trial_id)
    if ver not in system_attrs:
        return ""
    chunks = {k: v for k, v in system_attrs.items() if k.startswith(prefix)}
    return "".join(chunks.get(f"{prefix}{i}", "") for i in range(len(chunks)))


def write_notes(storage: BaseStorage, study_id: int, notes: dict[int | None, str]) -> int:
    """Write each changed note (key: a trial's id, or None for the study's) as optuna-dashboard's save_note does, with the
    next version so that a dashboard open on it reloads it; returns how many were written."""
    attrs = storage.get_study_system_attrs(study_id)
    written = 0
    for trial_id, body in notes.items():
        if read_note(attrs, trial_id) == body:
            continue
        ver, prefix = _note_keys(trial_id)
        storage.set_study_system_attr(study_id, ver, int(attrs.get(ver, 0)) + 1)
        chunks = [body[i:i + _NOTE_MAX] for i in range(0, len(body), _NOTE_MAX)] or [""]
        for i, chunk in enumerate(chunks):
            storage.set_study_system_attr(study_id, f"{prefix}{i}", chunk)
        old = sum(1 for k in attrs if k.startswith(prefix))
        for i in range(len(chunks), old):  # a shorter note: the rest emptied, as optuna-dashboard does
            storage.set_study_system_attr(study_id, f"{prefix}{i}", "")
        written += 1
    return written


def _md(text: Any) -> str:
    """Text safe inside Markdown (and the HTML optuna-dashboard renders it to): a network, a reason or a name from a shared
    database is shown as written, never as markup."""
    return re.sub(r"([\\`*_\[\]|#~])", r"\\\1", html.escape(str(text), quote=False))


def study_note(report: FrontReport, identity: dict[str, Any] | None, by: str) -> str:
    """The study's note: the front table of `pareto` (mean ± std and seeds per point), the noise floor, the hypervolume,
    the trials by how they ended, who chose the networks, and what the study was made with."""
    lines = [f"### Pareto front of {_md(report.study)}: proxy accuracy up, FLOPs down", ""]
    if report.rows:
        lines += ["| trial | accuracy | seeds | GFLOPs | params (M) | architecture |", "|--:|--:|--:|--:|--:|:--|"]
        for row in report.rows:
            accuracy = f"{row['accuracy']:.4f}" + (f" ± {row['accuracy_std']:.4f}" if row["accuracy_std"] is not None else "")
            lines.append(f"| {row['trial']} | {accuracy}{' ≈' if row['within_noise'] else ''} | {row['seeds']} | {row['flops'] / 1e9:.3f} | "
                         f"{row['params'] / 1e6:.2f} | {_md(row['summary'])} |")
    else:
        lines.append("None yet: no trial trained to the end.")
    lines.append("")
    if report.noise:
        marked = sum(row["within_noise"] for row in report.rows)
        lines.append(f"**Noise floor** ± {report.noise['std']:.4f} (pooled std over seeds of {report.noise['trials']} networks)"
                     + (f"; ≈ marks {marked} point(s) whose gain over the next cheaper one is within noise." if marked else "."))
    elif report.rows:
        lines.append(f"**Noise floor** unknown: one seed per network (`confirm --seeds {CONFIRM_SEEDS}` trains the front again with other seeds).")
    if report.hypervolume is not None:
        lines += ["", f"**Hypervolume** {report.hypervolume:.4f} (the area the front dominates in (FLOPs / budget, accuracy), "
                     "reference point (1, 0))."]
    lines += ["", "**Trials:** " + _md("".join(text for text, _ in study_parts(report.endings))) + ".",
              "", f"**Refused before training:** {_md(refused_words(report.endings.refused))}.",
              "", f"**Networks trained, chosen** {_md(proposed_words(report.proposed_by))}."]
    made = readable_identity(report.study, identity) if isinstance(identity, dict) else {}
    if made:
        lines += ["", "| made with | |", "|:--|:--|", *(f"| {_md(k)} | {_md(v)} |" for k, v in made.items())]
    lines += ["", f"The front as a picture and the `analyze` report: this study's artifacts (below). Written by `{_md(by)}`; "
              "`search`, `confirm` and `pareto` rewrite this note (an edit made here is replaced then)."]
    return "\n".join(lines)


def trial_note(trial: FrozenTrial, found: Endings, on_front: dict[int, dict[str, Any]]) -> str:
    """A trial's note: how it ended (and which trial it retries or repeats), its network, who chose it, its place on the front."""
    lines = [f"**Trial {trial.number}:** {_md(how_it_ended(trial, found))}", ""]
    record = TrialRecord(trial)
    if record.config is not None:
        network = network_words(record.config) or "a network this convspace cannot read"
        flops, params = record.flops, record.params
        cost = f", {flops / 1e9:.3f} GFLOPs" if isinstance(flops, int | float) else ""
        params_words = f", {params / 1e6:.2f} M params" if isinstance(params, int | float) else ""
        chosen = "" if ending(trial) == "repeat" else f"; chosen {_md(PROPOSER_WORDS.get(record.proposed_by, record.proposed_by))}"
        lines.append(f"{_md(network)}{cost}{params_words}{chosen}.")
    row = on_front.get(trial.number)
    if row:
        spread = f" ± {row['accuracy_std']:.4f} over {row['seeds']} seeds" if row["accuracy_std"] is not None else ""
        lines += ["", f"On the Pareto front: accuracy {row['accuracy']:.4f}{spread}."]
    return "\n".join(lines)
