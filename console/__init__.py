"""The command line's parts beside its commands (cli.py): options made from the settings (options), how a mistake is
told (errors), what a name on the command line means (inputs), and what is printed (tables, runs).

Nothing here imports torch, Ray or Optuna at import time: `--help` and a refused command stay instant.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

from nas.engine.storage import mask_passwords

# Piped output (logs, CI) gets a wide table instead of rich's 80-column default, unless $COLUMNS says otherwise.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)


def notice(line: str) -> None:
    """One line on stderr about something beside the command's result that did not happen (stdout may be JSON)."""
    print(f"note: {mask_passwords(line)}", file=sys.stderr)
