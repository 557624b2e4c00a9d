"""A study in optuna-dashboard as a person reads it: one trial per training, one state per outcome, GFLOPs.

The search stores every sampled point as an Optuna trial (TPE learns from the refused ones, and Optuna cannot
sample a point without storing it), so a search of 12 trainings leaves a study of over a hundred trials, most of
them over-budget samples that optuna-dashboard shows with the same "Pruned" chip as the trials ASHA stopped. The
dashboard is therefore served through `TrainedTrialsView`, a read view of the storage that lists only the trials
whose network was (or is being) trained, so that each chip means one thing, and counts the samples it leaves out
on the study's page. The study itself is untouched: `pareto`, `export` and Optuna see every trial.

optuna-dashboard has no authentication of its own and ignores the Host header: whoever reaches its port (every user
of the machine on loopback; a web page through DNS rebinding) could read, change or delete studies. It is therefore
served behind `TokenGate`: a token made for each launch, printed once in the URL, and a check of the Host header.
"""

from __future__ import annotations

import copy
import errno
import hmac
import ipaddress
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from nas import record
from nas.pareto import load_study
from nas.record import screened_counts
from nas.settings import is_loopback
from nas.storage import open_storage
from space.errors import ConvspaceError

# Statuses of sampled points that were refused before any training, as the plain strings the storage holds.
NEVER_TRAINED = tuple(str(status) for status in record.NEVER_TRAINED)
# What each chip the dashboard draws means once the refused samples are left out.
STATES = {"trained": "Complete", "stopped": "Pruned", "failed": "Fail"}
_METRIC_NAMES = "study:metric_names"  # where Optuna keeps `study.set_metric_names` (optuna-dashboard reads it too)


class TrainedTrialsView(BaseStorage):
    """A storage as the dashboard shows it: trained, stopped, failed and live trials only, FLOPs objectives in
    GFLOPs, a summary of outcomes first among the study's attributes; every write goes to the storage unchanged."""

    def __init__(self, storage: BaseStorage) -> None:
        self._storage = storage
        self._outcomes: dict[int, Counter[str]] = {}  # per study, from the last full read of its trials

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        """The trials that trained or are training, numbered as in the study (so `export --trial N` matches)."""
        flops_at = _flops_objective(self._storage.get_study_system_attrs(study_id))
        outcomes: Counter[str] = Counter()
        shown = []
        for trial in self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=states):
            status = trial.user_attrs.get("status")
            outcomes[status if trial.state.is_finished() else trial.state.name.lower()] += 1
            if status not in NEVER_TRAINED and status != "repeat":  # a repeat is a seed of a listed network, not a point
                shown.append(_readable(trial, flops_at))
        if states is None:  # a filtered read would undercount
            self._outcomes[study_id] = outcomes
        return shown

    def get_all_studies(self) -> list[FrozenStudy]:
        """The studies, each with its outcomes summarised first among its user attributes."""
        return [self._readable_study(s) for s in self._storage.get_all_studies()]

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        """System attributes with a FLOPs objective renamed GFLOPs, as its values are shown."""
        return _readable_system_attrs(self._storage.get_study_system_attrs(study_id))

    def _readable_study(self, study: FrozenStudy) -> FrozenStudy:
        study_id = study._study_id
        if study_id not in self._outcomes:
            self.get_all_trials(study_id, deepcopy=False)
        outcomes = self._outcomes[study_id] + Counter(screened_counts(study.user_attrs))  # + those refused unstored
        ours = outcomes.keys() & {*STATES, *NEVER_TRAINED}  # a study the search wrote (a storage may hold others)
        summary = outcome_summary(outcomes, study.user_attrs.get("budget")) if ours else {}
        return FrozenStudy(
            study.study_name, None, {**summary, **study.user_attrs}, _readable_system_attrs(study.system_attrs),
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


def outcome_summary(outcomes: Counter[str], budget: int | None) -> dict[str, str]:
    """The study's first lines in the dashboard: what each chip counts, and the samples that are not listed."""
    listed = ", ".join(f"{outcomes[s]} {what} ({STATES[s]})" for s, what in
                       (("trained", "trained to the end"), ("stopped", "stopped early"), ("failed", "failed")))
    listed += "".join(f", {outcomes[s]} {s}" for s in ("running", "waiting") if outcomes[s])
    if outcomes["repeat"]:
        listed += f"; {outcomes['repeat']} training(s) with other seeds (confirm; not listed: `pareto` shows the means)"
    refused = f"{outcomes['over_budget']} over the budget" + (f" of {budget / 1e9:g} GFLOPs" if budget else "")
    if outcomes["under_band"]:
        refused += f", {outcomes['under_band']} under --flops-min"
    if outcomes["unfit"]:
        refused += f", {outcomes['unfit']} too dilated for the proxy resolution"
    refused += f", {outcomes['duplicate']} duplicates of an evaluated network"
    if outcomes["surplus"]:
        refused += f", {outcomes['surplus']} past --trials (another driver took the last slot)"
    return {"trials": listed, "samples never trained (not listed)": refused}


def _flops_objective(system_attrs: dict[str, Any]) -> int | None:
    """Which objective holds FLOPs (the search names its objectives proxy_accuracy, flops)."""
    names = system_attrs.get(_METRIC_NAMES) or []
    return names.index("flops") if "flops" in names else None


def _readable_system_attrs(system_attrs: dict[str, Any]) -> dict[str, Any]:
    names = system_attrs.get(_METRIC_NAMES)
    if not names or "flops" not in names:
        return system_attrs
    return {**system_attrs, _METRIC_NAMES: ["GFLOPs" if n == "flops" else n for n in names]}


def _readable(trial: FrozenTrial, flops_at: int | None) -> FrozenTrial:
    """A copy with its outcome and GFLOPs first among its attributes (the box that shows them is short)."""
    shown = copy.copy(trial)
    attrs = dict(trial.user_attrs)
    first = {"status": attrs.pop("status", None)}
    if "flops" in attrs:
        first["gflops"] = round(attrs["flops"] / 1e9, 3)
    first.update({k: attrs.pop(k) for k in ("stop_reason", "proxy_accuracy", "epochs", "fail_reason") if k in attrs})
    shown.user_attrs = {**first, **attrs}
    if flops_at is not None and trial.values is not None:
        shown.values = [v / 1e9 if i == flops_at else v for i, v in enumerate(trial.values)]
    return shown


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
        return _refuse(start_response, "no token: open the URL that `cli.py dashboard` printed (it ends with ?token=...)")

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
    from optuna_dashboard import wsgi

    load_study(study, url)  # an unknown study is a user error
    storage = open_storage(url)
    token = secrets.token_urlsafe(32)
    try:  # binding is the only reliable test of a port: bind first, announce after
        server = make_server(host, port, wsgi(TrainedTrialsView(storage)),
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
