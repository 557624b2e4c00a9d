"""Space files: a design space read from YAML and validated at load, so that a bad value fails naming its dimension
before any point is sampled (sampling itself is space.choices).

A space file has `name`, `description`, `scale` (`absolute`, the default, or `fitted`: see space.fitting) and
`dimensions`, one entry per dimension of the parametrisation (space.dimensions), none missing and none unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from space.choices import ADDED_DIMS, Space, derive_depths
from space.dimensions import FINITE_DIMS, NETWORK_DIMS, STAGE_DIMS, Dimension
from space.errors import ConvspaceError, refuse
from space.files import read_yaml
from space.genome_versions import check_keys
from space.rules import ARCH_RULES, MAX_STAGES, STAGE_RULES, STEM_RULES, Rule

SPACES_DIR = Path(__file__).parent / "spaces"
DEFAULT_SPACE = "default"  # the shipped space every command uses unless told (space/spaces/default.yaml)


def is_shipped(name: str) -> bool:
    """Whether `name` is a shipped space's bare name (as a study's identity stores it)."""
    return (SPACES_DIR / f"{name}.yaml").is_file()
SCALES = ("absolute", "fitted")  # how a space sets a network's scale: sampled widths, or fitted to a FLOPs target
OPTIONAL_DIMS = (*ADDED_DIMS, "dense_kernel")

# The genome rule each dimension's values must pass (the derived dimensions are checked on what they derive).
_DIMENSION_RULES: dict[str, Rule] = {
    "stem": STEM_RULES["type"], "stem_norm": STEM_RULES["norm"],
    **{name: ARCH_RULES[name] for name in NETWORK_DIMS if name in ARCH_RULES},
    **{name: STAGE_RULES[name] for name in STAGE_DIMS if name != "dense_kernel"}, "dense_kernel": STAGE_RULES["kernel"],
}


def space_from_dict(data: Any, default_name: str = "space") -> Space:
    """A validated Space from a parsed space file: every key known, every value passing its genome rule."""
    if not isinstance(data, dict):
        raise ConvspaceError("space: must be a mapping with 'dimensions'")
    unknown = set(data) - {"name", "description", "dimensions", "scale"}
    if unknown:
        raise ConvspaceError(f"space.{sorted(unknown)[0]}: unknown key; allowed: name, description, scale, dimensions")
    scale = data.get("scale", "absolute")
    if scale not in SCALES:
        refuse("space.scale", f"must be one of {', '.join(SCALES)}", scale)
    raw = data.get("dimensions")
    if not isinstance(raw, dict):
        raise ConvspaceError("space.dimensions: must be a mapping of dimension name -> spec")
    known = NETWORK_DIMS + STAGE_DIMS
    check_keys("dimensions", raw, known, what="dimension", optional=OPTIONAL_DIMS)
    space = Space(str(data.get("name", default_name)), str(data.get("description", "")),
                  {k: Dimension.from_spec(k, raw[k]) for k in known if k in raw}, scale)
    _check_lengths(space)
    _check_values(space)
    return space


def load_space(path: str | Path) -> Space:
    """Load a space file; a bare name ('default') means a shipped space."""
    path = Path(path)
    if not path.exists() and (SPACES_DIR / f"{path.name}.yaml").exists():
        path = SPACES_DIR / f"{path.name}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
        raise ConvspaceError(f"space: no file {str(path)!r} (shipped spaces: {shipped})")
    return space_from_dict(read_yaml(path, "space"), default_name=path.stem)


def _check_lengths(space: Space) -> None:
    lists = [v for d in ("depth_pattern", "width_multipliers") for v in space.dims[d].candidates()]
    if not all(isinstance(v, tuple) for v in lists) or len({len(v) for v in lists}) != 1:
        raise ConvspaceError("dimensions.depth_pattern: every depth pattern and width multiplier list must be a list of one length (the number of stages)")
    if not 1 <= space.num_stages <= MAX_STAGES:
        refuse("dimensions.depth_pattern", f"must give 1..{MAX_STAGES} stages", space.num_stages)


def _check_values(space: Space) -> None:
    """Check every value of every dimension against the genome's rule for its field, exhaustively, at load.

    A value that only some sampled points would reach must fail here, naming the dimension, not in the
    middle of a search. Derived dimensions must be positive numbers, and every depth they derive is checked.
    """
    for name, rule in _DIMENSION_RULES.items():
        for value in space.dim(name).checked_values():
            rule(f"dimensions.{name}", value)
    for name in FINITE_DIMS:
        for value in space.dims[name].checked_values():
            for number in value if isinstance(value, tuple) else (value,):
                if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                    refuse(f"dimensions.{name}", "must hold numbers above 0", value)
    for pattern in space.dims["depth_pattern"].candidates():
        for scale in space.dims["depth_scale"].candidates():
            for depth in derive_depths(pattern, scale):
                STAGE_RULES["depth"](f"dimensions.depth_pattern: {list(pattern)} x depth_scale {scale} gives a depth that", depth)
