"""Narrowing a design space: one dimension cut to a sub-range or to some of its choices, a space written back as a
space file, and the check that a narrowed space is a subspace of the one it came from.

Why here: what a dimension is (space.dimensions) and how a space file reads (space.space_file) live in `space`; a
narrowed space must be written in exactly the spelling they read, and checked with their rules. Who decides what to
narrow (from a study's trials) is nas.analysis.refine. No torch, no Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from space.choices import Space
from space.dimensions import Dimension, encode_choice
from space.errors import ConvspaceError

DIGITS = 10  # a stepped float bound is written rounded (0.30000000000000004 -> 0.3); `allows` tolerates 1e-9 steps


def spec_of(dim: Dimension) -> dict[str, Any]:
    """The space-file spelling of a dimension (`{int: [3, 21], step: 2}`): Dimension.from_spec reads it back as `dim`."""
    if dim.kind in ("choice", "value"):
        values = [list(v) if isinstance(v, tuple) else v for v in dim.values]
        spec: dict[str, Any] = {"choice": values} if dim.kind == "choice" else {"value": values[0]}
    else:
        spec = {dim.kind: [_number(dim.low, dim.kind), _number(dim.high, dim.kind)]}
        if dim.step:
            spec["step"] = _number(dim.step, dim.kind)
        if dim.log:
            spec["log"] = True
    if dim.per_stage:
        spec["per_stage"] = True
    return spec


def dimension_from_record(name: str, record: Mapping[str, Any]) -> Dimension:
    """A dimension from its stored form (`dataclasses.asdict`, as a study's identity keeps it: tuples read back as lists)."""
    values = tuple(tuple(v) if isinstance(v, list) else v for v in record.get("values", ()))
    kind = record.get("kind")
    if kind in ("choice", "value"):
        return Dimension(name, kind, values, per_stage=bool(record.get("per_stage", False)))
    return Dimension(name, str(kind), (), record["low"], record["high"], record.get("step"), bool(record.get("log", False)),
                     bool(record.get("per_stage", False)))


def space_dict(space: Space) -> dict[str, Any]:
    """A space as a space file holds it (Space.from_dict reads it back, validated)."""
    return {"name": space.name, "description": space.description, "scale": space.scale,
            "dimensions": {name: spec_of(dim) for name, dim in space.dims.items()}}


def narrow_range(dim: Dimension, low: float, high: float) -> Dimension:
    """An int/float range cut to [low, high] (values the dimension allows, so a stepped range keeps its grid)."""
    if dim.kind not in ("int", "float"):
        raise ConvspaceError(f"{dim.name}: only an int or float range narrows to a sub-range, it is a {dim.kind}")
    if dim.kind == "float":  # a stepped float as stored (0.5000000000000001) is a value of its step
        low, high = _number(low, dim.kind), _number(high, dim.kind)
    if not (dim.allows(low) and dim.allows(high) and low <= high):
        raise ConvspaceError(f"{dim.name}: [{low}, {high}] is not a sub-range of [{dim.low}, {dim.high}]"
                             + (f" on its step {dim.step}" if dim.step else ""))
    return Dimension(dim.name, dim.kind, (), low, high, dim.step, dim.log, dim.per_stage)


def narrow_choices(dim: Dimension, kept: list[Any]) -> Dimension:
    """A choice list cut to `kept` (given as values or as a trial stores them: '3,4,6,3'), in the list's own order."""
    if dim.kind != "choice":
        raise ConvspaceError(f"{dim.name}: only a choice list narrows to some of its choices, it is a {dim.kind}")
    wanted = {_key(encode_choice(v)) for v in kept}
    values = tuple(v for v in dim.values if _key(encode_choice(v)) in wanted)
    if not values or len(values) != len(wanted):
        raise ConvspaceError(f"{dim.name}: {kept!r} are not some of its choices {list(dim.values)!r}")
    return Dimension(dim.name, "choice", values, per_stage=dim.per_stage)


def within(new: Dimension, old: Dimension) -> bool:
    """Whether every value `new` can take is one `old` can take (same kind of range: same step grid and scale)."""
    if new.kind in ("choice", "value"):
        return all(old.allows(v) for v in new.values)
    if old.kind != new.kind or old.log != new.log or (old.step or 0) != (new.step or 0):
        return False
    return new.low <= new.high and old.allows(new.low) and old.allows(new.high)


def is_subspace(new: Space, old: Space) -> bool:
    """Whether `new` only narrows `old`: same parametrisation and scale, each dimension within the old one; then every
    network `new` samples is one `old` samples (sampling is a function of the dimensions' draws)."""
    return (new.scale == old.scale and set(new.dims) == set(old.dims) and new.num_stages == old.num_stages
            and all(within(new.dims[k], old.dims[k]) and new.dims[k].per_stage == old.dims[k].per_stage for k in new.dims))


def space_yaml(space: Space, header: list[str], notes: Mapping[str, list[str]]) -> str:
    """A space file's text: `header` as comment lines on top, then each dimension as one flow-style line, those in `notes`
    preceded by their comment lines (why they were narrowed). Read back with Space.from_yaml."""
    import yaml

    def line(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=math.inf, allow_unicode=True).strip().removesuffix("...").strip()

    data = space_dict(space)
    lines = [f"# {h}".rstrip() for h in header]
    lines += [f"name: {line(data['name'])}", f"description: {line(data['description'])}", f"scale: {line(data['scale'])}", "dimensions:"]
    for name, spec in data["dimensions"].items():
        lines += [f"  # {n}".rstrip() for n in notes.get(name, [])]
        lines.append(f"  {name}: {line(spec)}")
    return "\n".join(lines) + "\n"


def _number(value: float, kind: str) -> int | float:
    return int(value) if kind == "int" else round(float(value), DIGITS)


def _key(value: Any) -> Any:
    """A choice as a set key that keeps True apart from 1 (as Dimension.allows does)."""
    return (type(value) is bool, value)
