"""A study in optuna-dashboard as a person reads it: what `pareto` says, one trial per training, one state per outcome.

The search stores every sampled point as an Optuna trial (TPE learns from the refused ones, and Optuna cannot
sample a point without storing it), so a search of 12 trainings leaves a study of over a hundred trials, most of
them samples refused before training that optuna-dashboard would show with the same "Pruned" chip as the trials
ASHA stopped. The dashboard is therefore served through `TrainedTrialsView`, a read view of the storage that lists
only the trials whose network was (or is being, or waits to be) trained, so that each chip means one thing: a trial
cut short and trained again is listed once, as its retry; a repeat with another seed is a seed of a listed trial,
whose objective shows the mean over its seeds (as `pareto` does). The study itself is untouched: `pareto`, `export`
and Optuna see every trial.

What `pareto` prints reaches the dashboard as notes (optuna-dashboard's own: Markdown in the study's system attrs),
written by `publish`, which `search`, `confirm` and `pareto` call: the study note holds the front table, the noise
floor, the hypervolume, the trials by how they ended (nas.endings.ENDINGS) and who chose the networks; each trial's note
says how it ended and which trial it belongs to. The front PNG and the `analyze` report are study artifacts, kept in
an Optuna FileSystemArtifactStore beside the study (`<study>.artifacts/`) and served from there.

optuna-dashboard has no authentication of its own and ignores the Host header: whoever reaches its port (every user
of the machine on loopback; a web page through DNS rebinding) could read, change or delete studies. It is therefore
served behind `TokenGate`: a token made for each launch, printed once in the URL, and a check of the Host header.
"""

from __future__ import annotations

import errno
import hmac
import html
import ipaddress
import json
import math
import re
import secrets
import socket
from collections.abc import Callable, Container, Iterable, Sequence
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from nas.endings import ENDINGS, PROPOSER_WORDS, Endings, ending, endings, how_it_ended, proposed_words, refused_words, study_parts
from nas.pareto import FrontReport, load_study, summary
from nas.record import Status, StudyRecord, TrialRecord
from nas.settings import is_loopback
from nas.storage import make_url_or_none, open_storage, storage_fault
from space.errors import ConvspaceError

if TYPE_CHECKING:
    import optuna

# What the view lists: trials whose network trained, trains now or waits to (a retry, a warm start).
LISTED = ("trained", "stopped_scheduler", "stopped_time", "failed", "running", "waiting")
# What each chip the dashboard draws means once the others are left out.
STATES = {"trained": "Complete", "stopped": "Pruned", "failed": "Fail"}
_METRIC_NAMES = "study:metric_names"  # where Optuna keeps `study.set_metric_names` (optuna-dashboard reads it too)
ENDED = "ended"  # the first user attribute the dashboard shows of a trial: how it ended (nas.endings.how_it_ended)


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
    from nas.commands import command, search_args
    from nas.study import upgraded

    identity = upgraded(identity) or identity
    shown: dict[str, str] = {}
    if identity.get("budget"):
        band = f"{flops_words(identity['flops_min'])} to " if identity.get("flops_min") else "up to "
        shown["budget"] = (f"{band}{flops_words(identity['budget'])} (fvcore, counted at {identity.get('cost_resolution', 224)} px "
                           f"with {identity.get('cost_classes', 1000)} classes)")
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
    """Trained trials with repeats (`confirm`): (mean, std, accuracies), the trial's own accuracy first (nas.seeds)."""
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
        try:
            first["architecture"] = summary(_config(record.config))
        except (ConvspaceError, ValueError, TypeError, KeyError):
            pass  # shown as stored
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


def _config(text: str) -> Any:
    from space.config import ArchConfig

    return ArchConfig.from_json(text)


# ---- notes and artifacts: what `pareto` shows, written where optuna-dashboard shows it -------------------------------

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
        lines.append("**Noise floor** unknown: one seed per network (`confirm --seeds 3` trains the front again with other seeds).")
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
        try:
            network = summary(_config(record.config))
        except (ConvspaceError, ValueError, TypeError, KeyError):
            network = "a network this convspace cannot read"
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


def output_folder(url: str) -> Path:
    """Where a study's pictures and reports go unless told otherwise: beside its SQLite file (studies/ by default,
    git-ignored), or studies/ for a database server."""
    parsed = make_url_or_none(url)
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).parent
    return Path("studies")


def front_png(url: str, study: str) -> Path:
    """The front PNG that `search` and `confirm` leave (and upload) by default."""
    return output_folder(url) / f"{study}-front.png"


def analysis_folder(url: str, study: str) -> Path:
    """The folder `analyze` writes its report into by default."""
    return output_folder(url) / f"{study}-analysis"


def artifact_folder(url: str) -> Path:
    """The artifact store (Optuna's FileSystemArtifactStore) of the studies in a storage, beside it: `studies/x.artifacts`
    for `sqlite:///studies/x.db`, `studies/artifacts` for a database server (artifact ids are unique across studies)."""
    parsed = make_url_or_none(url)
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).with_suffix(".artifacts")
    return Path("studies") / "artifacts"


def upload(study: optuna.Study, url: str, path: Path) -> None:
    """Attach `path` to the study as an artifact the dashboard lists and serves, replacing an earlier one of that name."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    folder = artifact_folder(url)
    folder.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(folder)
    storage, study_id = study._storage, study._study_id
    earlier = [key for key, value in storage.get_study_system_attrs(study_id).items()
               if key.startswith("artifacts:") and isinstance(value, str) and (json.loads(value) or {}).get("filename") == path.name]
    upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    for key in earlier:  # as optuna-dashboard's own delete does: the file gone, its record nulled
        try:
            store.remove(key.removeprefix("artifacts:"))
        except Exception:  # noqa: BLE001 - already gone from the folder: the record is nulled all the same
            pass
        storage.set_study_system_attr(study_id, key, json.dumps(None))


def publish(study: optuna.Study, url: str, by: str, files: Sequence[Path] = (), *, notes: bool = True) -> str | None:
    """Write what `pareto` shows into the dashboard: the study note, each trained (or retried, repeated, running,
    queued) trial's note (unless `notes` is False), and `files` (the front PNG, the analysis report) as artifacts.
    Returns why it could not (a read-only study, a storage fault) rather than failing the command that calls it; None
    when done."""
    from nas.pareto import front_report

    try:
        if notes:
            report = front_report(study)
            on_front = {row["trial"]: row for row in report.rows}
            bodies: dict[int | None, str] = {None: study_note(report, StudyRecord(study).identity, by)}
            for t in study.get_trials(deepcopy=False):
                if ending(t) != "refused":  # refused samples are not listed; their count is in the study note
                    bodies[t._trial_id] = trial_note(t, report.endings, on_front)
            write_notes(study._storage, study._study_id, bodies)
        for path in files:
            upload(study, url, Path(path))
    except ConvspaceError as exc:
        return str(exc)
    except Exception as exc:  # a study this user may read but not write, a storage fault: the command's output stands
        fault = storage_fault(exc)
        if fault is None and not isinstance(exc, OSError):
            raise
        return fault or f"{exc.strerror or exc}"
    return None


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class TokenGate:
    """A WSGI app served only to requests that carry the launch's token and name an allowed host (as Jupyter does).

    The token comes once in the URL (`?token=...`): the answer is a redirect to the same page without it that sets a
    cookie (HttpOnly, SameSite=Lax), which the dashboard's own API calls then carry; scripts may send
    `Authorization: Bearer <token>` instead. A Host header that is not one of `hosts` (its port aside: an SSH tunnel may
    use another) is refused first: a page of another site that rebinds its name to this machine sends its own name."""

    def __init__(self, app: WSGIApp, token: str, hosts: Container[str], cookie: str) -> None:
        self.app, self._token, self.hosts, self.cookie = app, token.encode(), hosts, cookie

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _hostname(environ.get("HTTP_HOST", "")) not in self.hosts:
            return _refuse(start_response, "this dashboard answers to its own address only (the Host header names another)")
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given:
            if not self._valid(given[-1]):
                return _refuse(start_response, "wrong token")
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/")) + (f"?{rest}" if rest else "")
            start_response("302 Found", [("Location", location), ("Cache-Control", "no-store"), ("Content-Length", "0"),
                                         ("Set-Cookie", f"{self.cookie}={self._token.decode()}; Path=/; HttpOnly; SameSite=Lax")])
            return [b""]
        if self._valid(self._cookie(environ)) or self._valid(environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ")):
            return self.app(environ, start_response)
        return _refuse(start_response, "no token: open the URL that the dashboard command printed (it ends with ?token=...)")

    def _valid(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token.encode(errors="replace"), self._token)

    def _cookie(self, environ: dict[str, Any]) -> str | None:
        try:
            morsel = SimpleCookie(environ.get("HTTP_COOKIE", "")).get(self.cookie)
        except CookieError:
            return None
        return morsel.value if morsel else None


def _refuse(start_response: Callable[..., Any], why: str) -> list[bytes]:
    body = f"403 Forbidden: {why}\n".encode()
    start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def _hostname(host_header: str) -> str:
    """The host of a Host header, without its port or brackets, lowercase: `[::1]:8080` -> `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")


class AllowedHosts:
    """The names a request may give in its Host header for a dashboard bound to `host`: that host; on loopback or on
    every interface the loopback names too; on every interface this machine's name, its FQDN and any address of
    its own (one that a socket can bind to). Never a name that merely resolves to this machine: that is what DNS
    rebinding makes of an attacker's name."""

    def __init__(self, host: str) -> None:
        host = host.strip("[]").lower()
        self.wildcard = host in WILDCARDS
        self.names = {host} | (set(LOOPBACK_NAMES) if self.wildcard or is_loopback(host) else set())
        if self.wildcard:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self._own: dict[str, bool] = {}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name:
            return False
        if name in self.names:
            return True
        if not self.wildcard:
            return False
        if name not in self._own:
            self._own[name] = _own_address(name)
        return self._own[name]


def _own_address(name: str) -> bool:
    """Whether `name` is an IP address of this machine (binding to it succeeds only then)."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No line per request: the dashboard polls every few seconds, which would bury the URL."""


class _IPv6Server(WSGIServer):
    address_family = socket.AF_INET6


def _print_now(line: str) -> None:
    print(line, flush=True)  # unwrapped (the URL stays one line to copy), and out before the server blocks


def serve_dashboard(url: str, study: str, host: str, port: int, announce: Callable[[str], None] = _print_now) -> None:
    """Serve the storage's studies in optuna-dashboard, behind a token made for this launch, until Ctrl-C; a host or
    port that cannot be bound is a user error raised before anything is announced or served."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    load_study(study, url)  # an unknown study is a user error
    storage = open_storage(url)
    token = secrets.token_urlsafe(32)
    artifacts = artifact_folder(url)  # the front PNG and the analysis report `publish` uploaded (none yet: nothing listed)
    try:  # binding is the only reliable test of a port: bind first, announce after
        server = make_server(host, port, wsgi(TrainedTrialsView(storage), artifact_store=FileSystemArtifactStore(artifacts)),
                             server_class=_IPv6Server if ":" in host else WSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        field = "host" if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL else "port"
        hint = "pick a free one with --port" if field == "port" else "give an address of this machine with --host"
        raise ConvspaceError(f"{field}: cannot serve on {host}:{port} ({exc.strerror or exc}); {hint}") from None
    port = server.server_address[1]  # the port bound (--port 0: one the system chose)
    # a cookie per port: browsers share a host's cookies between its ports (two dashboards side by side)
    server.set_app(TokenGate(server.get_app(), token, AllowedHosts(host), f"convspace-dashboard-{port}"))
    shown_host = f"[{host}]" if ":" in host else host
    study_id = storage.get_study_id_from_name(study)
    announce(f"optuna-dashboard for study {study}: http://{shown_host}:{port}/dashboard/studies/{study_id}?token={token}  (Ctrl-C stops; "
             "the token is this launch's: whoever has the URL can read and change the study)")
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how the user stops it
