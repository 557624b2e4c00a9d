"""Stored configs across genome versions: the keys of a version, the defaults of fields added since, and the hash that
does not change when a config is upgraded (see space.config's docstring for the convention).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any

from space.errors import ConvspaceError, refuse

GENOME_VERSION = 3  # raise it with each field added (and give that field metadata={"since": GENOME_VERSION})


def check_keys(path: str, keys: Iterable[Any], allowed: Sequence[str], what: str = "field", optional: Iterable[str] = ()) -> None:
    """Refuse unknown keys (with a did-you-mean) and missing ones: a typo must not silently change a network."""
    keys = list(keys)
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConvspaceError(f"{path}.{key}: unknown {what}{hint}; allowed: {', '.join(allowed)}")
    missing = [n for n in allowed if n not in keys and n not in optional]
    if missing:
        raise ConvspaceError(f"{path}.{missing[0]}: missing {what} (required: {', '.join(missing)})")


def since(f: Field) -> int:
    """The genome version that added a field (1: it was there before versions)."""
    return f.metadata.get("since", 1)


def upgrade(path: str, data: Any, cls: type, version: int) -> dict[str, Any]:
    """Check keys against the fields of `version`, then give the fields added since their defaults."""
    if not isinstance(data, Mapping):
        refuse(path, "must be a mapping of fields", type(data).__name__)
    later = {f.name: f for f in fields(cls) if since(f) > version}
    for key in data:
        if key in later:
            raise ConvspaceError(
                f"{path}.{key}: not a field of genome version {version} (added in version {since(later[key])}); "
                f"write version: {GENOME_VERSION} with every field of it"
            )
    check_keys(path, data, [f.name for f in fields(cls) if f.name not in later])
    return {**{name: f.default for name, f in later.items()}, **data}


def without_later_defaults(config: Any) -> Any:
    """The config as plain data, leaving out fields added after version 1 that hold their default (for the hash)."""
    data = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if since(f) > 1 and f.default is not MISSING and value == f.default:
            continue
        if isinstance(value, tuple):
            value = [without_later_defaults(v) for v in value]
        data[f.name] = without_later_defaults(value) if is_dataclass(value) else value
    return data


def build_checked(cls: type, values: dict[str, Any], path: str) -> Any:
    """Construct and prefix the field path onto any validation error."""
    try:
        return cls(**values)
    except ConvspaceError as exc:
        if not path:
            raise
        raise ConvspaceError(f"{path}.{exc}") from None
