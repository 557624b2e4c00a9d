"""The study file of a fixed-architecture study (e.g. studies/roadmap.yaml): which presets to train, with which proxy,
against which reference accuracies.

A module apart from nas.evaluate.ablation because `ablation` reads and checks its file before torch or Ray is imported
(a mistake in it is one line within a second); this module imports neither.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from space.errors import ConvspaceError
from space.files import read_yaml
from space.presets import get_preset
from trainers.settings import ProxySettings

_KEYS = {"study", "proxy", "reference"}


@dataclass(frozen=True)
class StudyFile:
    """A ready study: its name, the proxy settings, and the networks with their reference accuracy."""

    study: str
    proxy: ProxySettings
    reference: dict[str, float]


def load_study_file(path: str | Path) -> StudyFile:
    """Read and validate a study file (unknown keys and unknown presets are refused)."""
    path = Path(path)
    if not path.is_file():
        raise ConvspaceError(f"study file: no file {str(path)!r}")
    data = read_yaml(path, "study file")
    if not isinstance(data, dict) or set(data) - _KEYS or not {"study", "reference"} <= set(data):
        raise ConvspaceError(f"study file: {path} needs the keys study, reference (and optionally proxy), nothing else")
    for name in data["reference"]:
        get_preset(name)
    proxy_fields = {f.name for f in dataclasses.fields(ProxySettings)}
    unknown = set(data.get("proxy") or {}) - proxy_fields
    if unknown:
        raise ConvspaceError(f"study file: proxy.{sorted(unknown)[0]} is unknown; allowed: {', '.join(sorted(proxy_fields))}")
    try:
        proxy = ProxySettings(**(data.get("proxy") or {}))
    except ConvspaceError as exc:
        raise ConvspaceError(f"study file: proxy.{exc}") from None
    return StudyFile(str(data["study"]), proxy, {k: float(v) for k, v in data["reference"].items()})
