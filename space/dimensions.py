"""The dimensions of a design space: their names, one dimension's spec (as a space file gives it) and how it is
sampled, and the suggesters that answer a space's questions (an Optuna trial, a seeded draw, a replay of params).

No torch, no Optuna: sampling and checking a dimension run in microseconds anywhere.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

from space.errors import ConvspaceError

NETWORK_DIMS = (
    "stem", "stem_ratio", "stem_norm", "depth_pattern", "depth_scale", "base_width", "width_multipliers",
    "downsample", "norm", "act", "norms_per_block", "acts_per_block", "dw_position", "conv_bias",
    "layer_scale_init", "head_width", "head_norm", "drop_path_rate", "num_classes", "in_chans",
)
STAGE_DIMS = ("block", "kernel", "dense_kernel", "expansion", "conv", "groups", "attention", "dilation", "radix", "compression")
FINITE_DIMS = ("stem_ratio", "depth_pattern", "depth_scale", "base_width", "width_multipliers")
_SPEC_KEYS = {"choice", "int", "float", "value", "step", "log", "per_stage"}
_KINDS = ("choice", "int", "float", "value")


class Suggester(Protocol):
    """What sampling needs from an Optuna trial (or from the seeded stand-in below)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float: ...


class SeededSuggester:
    """Plain seeded random sampling with the trial interface; hand-written because Optuna's RandomSampler
    needs a Study per draw, and screening thousands of points must stay in microseconds."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.rng.choice(list(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        if log:
            return min(high, max(low, round(math.exp(self.rng.uniform(math.log(low), math.log(high))))))
        return self.rng.randrange(low, high + 1, step)

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        if step:
            return low + step * self.rng.randint(0, int(round((high - low) / step)))
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)


def encode_choice(value: Any) -> Any:
    """Optuna choices must be scalars: lists (depth patterns, multipliers) travel as '3,3,9,3'."""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def decode_choice(value: Any) -> Any:
    """The value an encoded choice stands for ('3,3,9,3' -> (3, 3, 9, 3))."""
    if isinstance(value, str) and "," in value:
        return tuple(float(v) if "." in v else int(v) for v in value.split(","))
    return value


@dataclass(frozen=True)
class Dimension:
    """One named dimension: a finite choice, an int/float range, or a fixed value."""

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False
    per_stage: bool = False

    @classmethod
    def from_spec(cls, name: str, spec: Any) -> Dimension:
        """Validate one YAML entry; every error names the dimension."""
        if not isinstance(spec, dict):
            raise ConvspaceError(f"{name}: must be a mapping like {{choice: [...]}}, got {spec!r}")
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ConvspaceError(f"{name}.{sorted(unknown)[0]}: unknown key; allowed: {', '.join(sorted(_SPEC_KEYS))}")
        kinds = [k for k in _KINDS if k in spec]
        if len(kinds) != 1:
            raise ConvspaceError(f"{name}: give exactly one of choice, int, float, value")
        kind = kinds[0]
        per_stage = spec.get("per_stage", False)
        if per_stage and name not in STAGE_DIMS:
            raise ConvspaceError(f"{name}.per_stage: only stage dimensions ({', '.join(STAGE_DIMS)}) can vary per stage")
        if kind in ("choice", "value"):
            values = tuple(spec["choice"]) if kind == "choice" and isinstance(spec["choice"], list) else None
            if kind == "value":
                values = (spec["value"],)
            if not values:
                raise ConvspaceError(f"{name}.choice: must be a non-empty list")
            values = tuple(tuple(v) if isinstance(v, list) else v for v in values)
            return cls(name, kind, values, per_stage=per_stage)
        bounds = spec[kind]
        number = int if kind == "int" else (int, float)
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, number) for b in bounds)):
            raise ConvspaceError(f"{name}.{kind}: must be [low, high] of {kind}s, got {bounds!r}")
        if bounds[0] > bounds[1]:
            raise ConvspaceError(f"{name}.{kind}: low must not exceed high, got {bounds!r}")
        step, log = spec.get("step"), bool(spec.get("log", False))
        if log and (step or bounds[0] <= 0):
            raise ConvspaceError(f"{name}.log: needs low > 0 and no step")
        if name in FINITE_DIMS and kind == "float" and not step:
            raise ConvspaceError(f"{name}: needs a step (or a choice) so that the space stays finite")
        return cls(name, kind, (), bounds[0], bounds[1], step, log, per_stage)

    def suggest(self, trial: Suggester, label: str) -> Any:
        """Draw a value; fixed values are not parameters of the trial."""
        if self.kind == "value":
            return self.values[0]
        if self.kind == "choice":
            if len(self.values) == 1:
                return self.values[0]
            return decode_choice(trial.suggest_categorical(label, [encode_choice(v) for v in self.values]))
        if self.kind == "int":
            return trial.suggest_int(label, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(label, float(self.low), float(self.high), step=self.step, log=self.log)

    def candidates(self) -> list[Any]:
        """All values of a finite dimension (for `contains`)."""
        if self.kind in ("choice", "value"):
            return list(self.values)
        step = self.step or 1
        count = int(round((self.high - self.low) / step))
        return [self.low + i * step for i in range(count + 1)]

    def checked_values(self) -> list[Any]:
        """Every value the dimension can take, or the two ends of an unstepped float range (field rules are intervals)."""
        if self.kind == "float" and not self.step:
            return [self.low, self.high]
        return self.candidates()

    def allows(self, value: Any) -> bool:
        """Whether `value` lies in this dimension."""
        if self.kind in ("choice", "value"):
            return any(_same(value, v) for v in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        return not self.step or abs((value - self.low) / self.step - round((value - self.low) / self.step)) < 1e-9


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 and compares lists with tuples."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class Replay:
    """A Suggester that answers each question from a dict of params: the same params, the same network."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return self.params[name]
