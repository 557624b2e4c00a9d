"""A study and optuna-dashboard: what `search`, `confirm` and `pareto` publish into it, and the `dashboard` command.

`publish` writes what `pareto` prints as the dashboard's notes (nas.front.dashboard_notes) and uploads the front PNG and the
`analyze` report as study artifacts, kept in an Optuna FileSystemArtifactStore beside the study
(`<study>.artifacts/`); `serve_dashboard` serves the storage through the read view that lists one trial per training
(nas.front.dashboard_view), behind a token made for the launch (nas.front.dashboard_gate).
"""

from __future__ import annotations

import errno
import json
import secrets
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from nas.engine.endings import ending
from nas.engine.record import StudyRecord
from nas.engine.storage import make_url_or_none, open_storage, storage_fault
from nas.front.dashboard_gate import AllowedHosts, TokenGate
from nas.front.dashboard_notes import study_note, trial_note, write_notes
from nas.front.dashboard_view import TrainedTrialsView
from nas.front.pareto import load_study
from space.errors import ConvspaceError
from trainers.settings import STUDIES_DIR

if TYPE_CHECKING:
    import optuna


def output_folder(url: str) -> Path:
    """Where a study's pictures and reports go unless told otherwise: beside its SQLite file (studies/ by default,
    git-ignored), or studies/ for a database server."""
    parsed = make_url_or_none(url)
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).parent
    return Path(STUDIES_DIR)


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
    return Path(STUDIES_DIR) / "artifacts"


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
    from nas.front.pareto import front_report

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
