"""How a mistake is told: one `error: ...` line on stderr and exit 2, for a user's mistake, a storage fault underneath,
and a bad command line alike (typer's own is a multi-line usage box, a traceback the rest)."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import typer

from nas.engine.storage import DAMAGED, mask_passwords, storage_fault
from space.errors import ConvspaceError

# timm still calls torch.jit.script at import; the deprecation notice is noise for our users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
warnings.filterwarnings("ignore", message=".*is experimental.*")  # Optuna's notice on set_metric_names
warnings.filterwarnings("ignore", message=".*is an experimental feature.*")  # ... and on heartbeat_interval
# Optuna expects heartbeats with Study.optimize; the search uses ask/tell and sends them itself (nas/engine/search.py).
warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")

# typer vendors click and exports only BadParameter of its exceptions; BadParameter's base is the
# UsageError that every bad command line raises (missing option, bad value, unknown command).
UsageError = typer.BadParameter.__base__


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A user mistake prints one line (no traceback) and exits with 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConvspaceError as exc:
            print(f"error: {mask_passwords(str(exc))}", file=sys.stderr)  # a URL in a message never shows its password
            raise typer.Exit(2) from None
        except Exception as exc:
            fault = storage_fault(exc)  # the storage failed underneath (damaged, locked, full, gone): one line, not a traceback
            if fault is None:
                raise
            hint = ("the SQLite file is damaged: restore it from a copy, or salvage it with `sqlite3 FILE .recover`"
                    if any(words in fault for words in DAMAGED) else "nothing finished is lost: rerun the same command to resume")
            print(f"error: storage: {fault}; {hint}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def run_app(app: typer.Typer) -> None:
    """Run the app; a bad command line also prints one line (typer's own is a multi-line usage box)."""
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        if message := exc.format_message():  # empty for a bare `cli.py`: the help was already printed
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            print(f"error: {mask_passwords(message)}{where}", file=sys.stderr)  # e.g. "unexpected extra argument (URL)"
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
