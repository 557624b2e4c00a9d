"""Exported model-factory entries on disk: which folders hold them and how to read one (no torch, no timm).

`nas.zoo` registers these entries with timm; the command line reads them here first, so that `inspect
<entry>` and a mistyped name answer at once, without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from space.errors import ConvspaceError
from space.files import read_yaml

DEFAULT_ZOO = Path("studies/exports")
ZOO_ENV = "CONVSPACE_ZOO"  # extra zoo folders, separated by os.pathsep


def zoo_folders() -> list[Path]:
    """studies/exports under the working directory, plus the folders in $CONVSPACE_ZOO, each once (an entry imported
    twice would make timm warn that it overwrites it)."""
    folders = [DEFAULT_ZOO, *(Path(p) for p in os.environ.get(ZOO_ENV, "").split(os.pathsep) if p)]
    unique: dict[Path, Path] = {}
    for folder in folders:
        unique.setdefault(folder.expanduser().resolve(), folder)
    return list(unique.values())


def read_entry(path: str | Path) -> dict[str, Any]:
    """One `<name>.yaml` entry: its name, config and where it came from; a malformed file is one line naming it."""
    data = read_yaml(path, "zoo entry")
    if not isinstance(data, dict) or not {"name", "config"} <= set(data):
        raise ConvspaceError(f"zoo entry: {path} needs the keys name and config (written by `cli.py export`)")
    return data


def find_entry(name: str) -> dict[str, Any] | None:
    """The exported entry registered as `name` (its YAML beside its module in a zoo folder), or None."""
    for folder in zoo_folders():
        path = folder / f"{name}.yaml"
        if path.is_file() and path.with_suffix(".py").is_file():
            return read_entry(path)
    return None
