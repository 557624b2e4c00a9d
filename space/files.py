"""One reader for every YAML/JSON file a user hands us (spaces, configs, study files, zoo entries).

A missing file, one that is not UTF-8, or one that does not parse becomes one line naming the file,
never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from space.errors import ConvspaceError


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse `path` as YAML (a superset of JSON); `what` names the file's role in the error (e.g. 'space')."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConvspaceError(f"{what}: {path} is not a UTF-8 text file (byte {exc.start} cannot be read)") from None
    except OSError as exc:
        raise ConvspaceError(f"{what}: cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConvspaceError(f"{what}: {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
