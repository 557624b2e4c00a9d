"""The one exception type for mistakes a user can make (bad config, space, budget, study...)."""

from __future__ import annotations

from typing import NoReturn


class ConvspaceError(ValueError):
    """A user error: the message names the field and what is allowed; the CLI prints it on one line."""


def refuse(name: str, allowed: str, value: object) -> NoReturn:
    """Raise the one message shape of every check: `name: what is allowed, got value`."""
    raise ConvspaceError(f"{name}: {allowed}, got {value!r}")


def require(ok: bool, name: str, allowed: str, value: object) -> None:
    """`refuse` unless `ok`: one line per rule in the settings' checks."""
    if not ok:
        refuse(name, allowed, value)
