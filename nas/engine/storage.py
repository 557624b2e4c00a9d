"""Where studies live: SQLAlchemy URLs (SQLite file under studies/ by default, PostgreSQL by URL).

Optuna is imported inside the functions that open a study, so that the command line can resolve and show
a storage URL before any heavy import.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.errors import ConvspaceError
from trainers.settings import STUDIES_DIR  # the one folder a SQLite URL may name before it exists (made on first use)

if TYPE_CHECKING:
    import optuna

STORAGE_ENV = "CONVSPACE_STORAGE"  # the default storage URL, so that a password stays off the command line


def default_storage(study: str) -> str:
    """$CONVSPACE_STORAGE when set, else sqlite:///studies/<study>.db relative to the working directory."""
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{STUDIES_DIR}/{study}.db"


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_study_name(name: str) -> None:
    """A study name is also a file name (studies/<name>.db) and a label in tables: letters, digits, `_ . -`, at most 100
    characters, no path separators and no `..` (`--study ../etc/evil` would otherwise write ./etc/evil.db)."""
    if not STUDY_NAME.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ConvspaceError(f"study: {shown!r} is not a study name: use letters, digits, '_', '.' and '-' (at most 100 characters, "
                             "starting with a letter or digit, no '..')")


def check_storage_url(url: str) -> None:
    """Refuse a SQLite URL that would lose the study or write where the user did not mean to: in memory (gone when the
    command ends), or in a folder that does not exist (created silently before: a typo made a folder tree) or that this
    user cannot write. The default `studies/` folder is created on first use."""
    parsed = make_url_or_none(url)
    if parsed is None or parsed.get_backend_name() != "sqlite":
        return
    if parsed.database in (None, "", ":memory:"):
        raise ConvspaceError(f"storage: {display_url(url)!r} is an in-memory SQLite database, gone when the command ends; "
                             "give a file, e.g. sqlite:///studies/NAME.db")
    folder = Path(parsed.database).parent
    if not folder.is_dir():
        if folder == Path(STUDIES_DIR):
            return
        raise ConvspaceError(f"storage: the folder {str(folder)!r} of {display_url(url)!r} does not exist; create it first "
                             f"(or leave --storage out: studies go to ./{STUDIES_DIR}/)")
    if not Path(parsed.database).exists():  # (an existing study may be read-only: reading it needs no write)
        try:  # a real probe: permission bits say nothing of /proc, a read-only mount or root's rights
            tempfile.TemporaryFile(dir=folder).close()
        except OSError:
            raise ConvspaceError(f"storage: {display_url(url)!r} cannot be made (no file can be created in {str(folder)!r})") from None


def resolve_storage(study: str, storage: str | None) -> str:
    """The storage a command uses: --storage, else $CONVSPACE_STORAGE, else the study's SQLite file; the study name and a
    SQLite URL are checked here, before anything is opened."""
    check_study_name(study)
    url = storage or default_storage(study)
    check_storage_url(url)
    return url


def display_url(url: str) -> str:
    """The URL as it may be shown or stored: the password masked as the user spelled it (terminals, logs and bug
    reports keep it), whatever characters it holds and whether or not SQLAlchemy can parse the URL."""
    span = _password_span(url)
    if span:
        url = f"{url[:span[0]]}***{url[span[1]:]}"
    return _QUERY_SECRET.sub(r"\1***", url)  # SQLAlchemy hands ?password=... to the driver as well


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password is spelled in a URL as typed: after `scheme://user:`, up to the URL's last `@` (a password
    may hold `@ : / % ? #`; a host never holds `@`); None without a non-empty password there."""
    head = _USER_PART.match(url)
    end = url.rfind("@")
    return (head.end(), end) if head and end > head.end() else None


def ambiguous_password(url: str) -> bool:
    """Whether the URL's password holds an unencoded `@`: SQLAlchemy and libpq then end the password at its first `@`
    and take the rest of it for the host name (which a resolver would be asked for)."""
    span = _password_span(url)
    return bool(span) and "@" in url[span[0]:span[1]]


@contextlib.contextmanager
def results_folder(url: str, chosen: str | None = None) -> Iterator[Path]:
    """Where Ray's trial folders go: `chosen`, else beside a SQLite study file (`<its folder>/ray`), else a
    temporary folder removed afterwards; never the folder the command happens to run in."""
    parsed = make_url_or_none(url)
    if chosen or (parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")):
        yield Path(chosen or Path(parsed.database).parent / "ray").resolve()
        return
    with tempfile.TemporaryDirectory(prefix="convspace-ray-") as folder:
        yield Path(folder)


def requeue(study: optuna.Study, number: int, params: dict[str, Any], why: str) -> None:
    """Queue a lost trial's parameters to train again; the new trial says which one it retries and why."""
    from nas.engine.record import enqueue  # here: nas.engine.record imports Optuna, which this module imports only when used

    enqueue(study, params, {"retry_of": number, "retry_reason": why}, skip_if_exists=False)


def requeue_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial whose driver died (its heartbeat went stale) is FAIL already; queue its parameters again.

    Optuna fails it before calling us and refuses attributes on finished trials, so the reason goes on the retry."""
    requeue(study, trial.number, trial.params, "its driver stopped sending heartbeats")


def open_storage(url: str, heartbeat: tuple[int, int] | None = None) -> optuna.storages.RDBStorage:
    """RDBStorage from any SQLAlchemy URL; an unreachable or malformed one is a user error.

    `heartbeat` = (interval, grace) seconds: a running trial whose heartbeat is older than `grace` is failed
    and re-queued by whichever driver looks next (`optuna.storages.fail_stale_trials`).
    """

    beats = {}
    if heartbeat:
        beats = dict(heartbeat_interval=heartbeat[0], grace_period=heartbeat[1], heartbeat_stale_trial_callback=requeue_stale)
    if ambiguous_password(url):  # refused before any driver sees it: libpq would look the password's tail up as a host
        raise ConvspaceError(f"storage: the password in {display_url(url)!r} holds an unencoded '@', so where it ends is ambiguous: "
                             "write @ as %40 (and % as %25), or leave the password out of the URL (~/.pgpass or $PGPASSWORD)")
    parsed = make_url_or_none(url)
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # SQLite creates the file, not its folder; only studies/ is made here (check_storage_url refused any other)
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count():
        try:
            return _patient_storage_class()(url, engine_kwargs=_engine_kwargs(url), **beats)
        except Exception as exc:  # SQLAlchemy raises many types for a bad URL/server
            if attempt < 5 and _lost_schema_race(exc):
                time.sleep(0.5 * (attempt + 1))
                continue
            text = str(exc).strip()
            reason = text.splitlines()[0] if text else type(exc).__name__
            damaged = any(words in reason for words in DAMAGED)
            raise ConvspaceError(f"storage: cannot open {display_url(url)!r} ({hide_password(reason, url)})"
                                 + ("; the file is damaged: restore it from a copy, or salvage it with `sqlite3 FILE .recover`" if damaged else "")) from None


# `scheme://user:` at the start of a URL: the password follows, up to the URL's last `@` (see _password_span).
_USER_PART = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#\s]*:")
# `scheme://user:password@` anywhere in a text whose URLs are not known (a command line, a message): the password
# part, up to the last `@` before the next white space (a password may hold `@ : / %`).
_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#]*:)\S+(?=@)")
# ...and `?password=...`: SQLAlchemy hands a URL's query to the driver as connect arguments, so libpq takes it too.
_QUERY_KEYS = ("password", "passwd", "pwd")
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd)=)[^&\s'\"]+", re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """`text` with the password of every URL in it masked (for text whose URLs are not known: argv, errors)."""
    return _QUERY_SECRET.sub(r"\1***", _CREDENTIALS.sub(r"\1***", text))


def _secrets(url: str) -> list[str]:
    """Every spelling of the URL's password and password-like query values: as typed, as SQLAlchemy parsed them,
    %-decoded and %-encoded."""
    from urllib.parse import quote, unquote

    span = _password_span(url)
    values = [url[span[0]:span[1]]] if span else []
    parsed = make_url_or_none(url)
    if parsed is not None:
        values += [parsed.password] + [parsed.query.get(k) for k in parsed.query if k.lower() in _QUERY_KEYS]
    values += [m.group(0).partition("=")[2] for m in _QUERY_SECRET.finditer(url)]
    spelled = {str(v) for v in values if v and isinstance(v, str)}
    return sorted(spelled | {unquote(v) for v in spelled} | {quote(v, safe="") for v in spelled}, key=len, reverse=True)


def has_password(url: str) -> bool:
    """Whether the URL carries a password (which every display of it masks)."""
    return bool(_secrets(url))


def hide_password(text: str, url: str) -> str:
    """`text` (e.g. a driver's error message) with the URL's password masked: in every URL it holds, and wherever one
    of the password's spellings stands whole (never inside a longer word: a password `p` leaves `psycopg2` alone)."""
    text = mask_passwords(text)
    for secret in _secrets(url):
        text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(secret)}(?![A-Za-z0-9_])", "***", text)
    return text


def _lost_schema_race(exc: Exception) -> bool:
    """Processes opening a fresh database at once (drivers, or a reader beside a driver) race to create Optuna's
    tables and stamp its schema version; the losers see "table ... already exists" or a unique-key violation on
    the version row (SQLite and PostgreSQL alike), and only need to open again once the winner is done."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    if isinstance(exc, IntegrityError):
        return True
    return isinstance(exc, (OperationalError, ProgrammingError)) and "already exists" in str(exc)


# How long a driver keeps retrying a storage that is locked by another process, full, or (PostgreSQL) gone away, before it
# stops with one line (its trials keep training meanwhile; the study stays resumable). README: "Faults".
STORAGE_PATIENCE = 300.0
_TRANSIENT = ("database is locked", "database or disk is full", "disk i/o error", "could not connect", "connection refused",
              "server closed the connection", "terminating connection", "connection reset", "connection timed out",
              "the database system is starting up", "the database system is shutting down", "ssl syscall error",
              "could not receive data", "no route to host", "connection to server")


DAMAGED = ("malformed", "not a database")  # SQLite's words for a file that is no (longer a) database


class StorageUnavailable(ConvspaceError):
    """The storage stayed locked, full or unreachable past STORAGE_PATIENCE (a user-facing fault, told in one line)."""


_DRIVERS = ("sqlite3", "sqlalchemy", "psycopg2", "psycopg")
_FAULTS = ("OperationalError", "DatabaseError", "InterfaceError", "InternalError")
_BUGS = ("ProgrammingError", "IntegrityError", "DataError", "NotSupportedError")


def _is_fault(kind: type) -> bool:
    """The nearest DB-API class of `kind` (a driver's own subclass such as psycopg2.errors.AdminShutdown included) is a
    fault class; a ProgrammingError is a DatabaseError too, so the walk stops at whichever it meets first."""
    for base in kind.__mro__:
        if base.__module__.split(".")[0] in _DRIVERS and base.__name__ in _FAULTS + _BUGS:
            return base.__name__ in _FAULTS
    return False


def storage_fault(exc: BaseException) -> str | None:
    """The storage's own words for a fault (the first line of the driver's message), or None for other errors.

    Only the DB-API's fault classes count (damaged, locked, full, unreachable: OperationalError, DatabaseError,
    InterfaceError, InternalError, from the driver or as SQLAlchemy wraps them); a ProgrammingError, an IntegrityError
    or SQLAlchemy's own usage errors are bugs in our code and keep their traceback rather than read as a fault."""
    seen = exc
    while seen is not None:
        if _is_fault(type(seen)):
            text = str(getattr(seen, "orig", None) or seen).strip().splitlines()
            return mask_passwords(text[0] if text else type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return None


def _transient(exc: BaseException) -> bool:
    """A fault that may pass (a lock released, space freed, a server back), as opposed to a damaged file or a bad query."""
    fault = storage_fault(exc)
    return fault is not None and any(words in fault.lower() for words in _TRANSIENT)


def _patient(method: Any) -> Any:
    """Retry one storage operation (one SQL session: rolled back when it fails) on transient faults for STORAGE_PATIENCE."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        deadline, pause = None, 0.5
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                if not _transient(exc):
                    raise
                deadline = deadline or time.monotonic() + STORAGE_PATIENCE
                if time.monotonic() >= deadline:
                    raise StorageUnavailable(f"storage: {storage_fault(exc)} for {STORAGE_PATIENCE:.0f} s; the study is intact: "
                                             "rerun the same command to resume it once the storage is back") from None
                time.sleep(pause)
                pause = min(pause * 2, 10.0)

    return wrapper


_PATIENT_CLASS: Any = None


def _patient_storage_class() -> Any:
    """Optuna's RDBStorage whose every operation waits out transient faults (built once, Optuna imported lazily).

    Written here because neither Optuna nor SQLAlchemy retries a whole operation: SQLite's busy timeout covers a lock
    only, and pool_pre_ping a connection dropped between operations, not a server down for 40 s."""
    global _PATIENT_CLASS
    if _PATIENT_CLASS is None:
        import optuna

        base = optuna.storages.RDBStorage
        names = [n for n, v in vars(base).items() if callable(v) and (not n.startswith("_") or n in ("_get_trials", "_get_stale_trial_ids"))
                 and n not in ("__init__", "get_heartbeat_interval", "get_failed_trial_callback")]
        _PATIENT_CLASS = type("PatientRDBStorage", (base,), {n: _patient(getattr(base, n)) for n in names})
    return _PATIENT_CLASS


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite: wait for a lock instead of failing at once ("database is locked"), as long as any fault is waited out.
    return {"connect_args": {"timeout": STORAGE_PATIENCE}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def is_sqlite(url: str) -> bool:
    parsed = make_url_or_none(url)
    return parsed is not None and parsed.get_backend_name() == "sqlite"


class SqliteDriverLock:
    """One driver at a time on a SQLite study: SQLite is not for parallel writers (Optuna's FAQ, optuna#820,
    "database is locked"). An flock on <db>.lock; the kernel drops it when the driver dies, even by kill -9."""

    def __init__(self, url: str) -> None:
        # Keyed on the file itself: the same study reached through a symlink or another spelling is the same lock.
        real = Path(str(make_url_or_none(url).database)).resolve()
        self.path = real.with_name(real.name + ".lock")
        self.handle: Any = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise ConvspaceError(
                f"storage: another driver is running on {self.path.with_suffix('')}; SQLite does not support parallel "
                "drivers: use --storage postgresql+psycopg2://... to run several at once"
            ) from None

    def release(self) -> None:
        if self.handle:
            self.handle.close()


def make_url_or_none(url: str) -> Any:
    """SQLAlchemy's parsed URL, or None when it does not parse (open_storage then reports it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return None
