"""Where studies live: SQLAlchemy URLs (SQLite file under studies/ by default, PostgreSQL by URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from space.errors import ConvspaceError


def default_storage(study: str) -> str:
    """sqlite:///studies/<study>.db, relative to the working directory."""
    Path("studies").mkdir(exist_ok=True)
    return f"sqlite:///studies/{study}.db"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """RDBStorage from any SQLAlchemy URL; an unreachable or malformed one is a user error."""
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL/server
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvspaceError(f"storage: cannot open {url!r} ({reason})") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite: wait for a lock instead of failing at once ("database is locked").
    return {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def make_url_or_none(url: str) -> Any:
    """SQLAlchemy's parsed URL, or None when it does not parse (open_storage then reports it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError:
        return None
