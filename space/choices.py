"""The declarative design space: named dimensions loaded from YAML, sampled into ArchConfigs.

A space lists every dimension of the parametrisation below (none may be missing, no unknown ones), each
as `choice: [...]`, `int: [lo, hi]` or `float: [lo, hi]` (with optional `step`/`log`), or `value: x`.
Stage-level dimensions take `per_stage: true` to be sampled separately for each stage.

The network compiles from a low-dimensional parametrisation (as pycls' AnyNet/RegNet do):
depths = max(1, round(depth_pattern * depth_scale)); widths = base_width * width_multipliers and the
stem width = stem_ratio * widths[0], both rounded to multiples of 8. Conditions are built in, because
they follow from the genome: `conv` is sampled for bottleneck blocks only (basic is dense, convmod is
depthwise), `groups` only for the convs that take it (and reduced to the largest cardinality its convs'
channels allow; a grouped or shuffle conv left with 1 becomes dense), `radix` only for splat (reduced to
divide the channels), `kernel` for every conv but deformable (3x3), `dilation` only for the later stages
of strided networks. Parameter names are stable (`kernel`, or `kernel_s2` when per stage), so Optuna's
TPE/NSGA-II samplers can model them across trials.

A `dense` stage (DenseNet-BC) asks only what applies to it: `expansion` (its bottleneck over the growth),
`dense_kernel`, and `compression` for a stage after the first (the first has no transition); no conv, groups,
attention or dilation. Its growth rate is base_width / 2 (DenseNet's stem is twice its growth rate: at stem_ratio 1
the base width is that stem), so a fitted dense shape scales with the base width as every other family does; its
width is what it puts out (its input after the transition, plus depth x growth), not base_width x multiplier.

`dilation`, `radix` and `compression` came after the first spaces were written: a space that leaves them out keeps
its networks (every stage at dilation 1, no splat, DenseNet-BC's compression 0.5) and its dimensions, so a study made
with it still resumes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from space.config import (
    ARCH_RULES,
    DEFAULT_COMPRESSION,
    DEFAULT_RADIX,
    GROUPED_CONVS,
    MAX_STAGES,
    STAGE_RULES,
    STEM_RULES,
    ArchConfig,
    Rule,
    StageConfig,
    StemConfig,
    check_keys,
    grouped_channels,
)
from space.errors import ConvspaceError, refuse
from space.files import read_yaml
from space.widths import inner_width, splat_attention_channels, transition_width

NETWORK_DIMS = (
    "stem", "stem_ratio", "stem_norm", "depth_pattern", "depth_scale", "base_width", "width_multipliers",
    "downsample", "norm", "act", "norms_per_block", "acts_per_block", "dw_position", "conv_bias",
    "layer_scale_init", "head_width", "head_norm", "drop_path_rate", "num_classes", "in_chans",
)
STAGE_DIMS = ("block", "kernel", "dense_kernel", "expansion", "conv", "groups", "attention", "dilation", "radix", "compression")
# Dimensions added after spaces were first written, and what a space without them means.
ADDED_DIMS = {"dilation": {"value": 1}, "radix": {"value": DEFAULT_RADIX}, "compression": {"value": DEFAULT_COMPRESSION}}
# `dense_kernel`, where a space has it, is the kernel of the convs whose cost grows with in x out channels x k^2
# (dense, grouped, shuffle, split attention, separable), and `kernel` that of depthwise convs (ConvNeXt's, ConvMod's):
# the papers enlarge only depthwise kernels (ConvNeXt 7x7, RepLKNet 31x31, Conv2Former 11x11), and a dense 21x21 conv
# costs 49x a 3x3 one. A space without it samples one `kernel` for both, as before.
DENSE_KERNEL_CONVS = ("dense", "grouped", "shuffle", "splat", "separable")
OPTIONAL_DIMS = (*ADDED_DIMS, "dense_kernel")
SCALES = ("absolute", "fitted")  # how a space sets a network's scale: sampled widths, or fitted to a FLOPs target
FINITE_DIMS = ("stem_ratio", "depth_pattern", "depth_scale", "base_width", "width_multipliers")
_SPEC_KEYS = {"choice", "int", "float", "value", "step", "log", "per_stage"}
_KINDS = ("choice", "int", "float", "value")
SPACES_DIR = Path(__file__).parent / "spaces"


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


def _encode(value: Any) -> Any:
    """Optuna choices must be scalars: lists (depth patterns, multipliers) travel as '3,3,9,3'."""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def _decode(value: Any) -> Any:
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
            return _decode(trial.suggest_categorical(label, [_encode(v) for v in self.values]))
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


def round8(value: float) -> int:
    """Channel counts are kept multiples of 8 (as timm's make_divisible)."""
    return max(8, int(round(value / 8)) * 8)


def derive_depths(pattern: tuple[int, ...], scale: float) -> tuple[int, ...]:
    return tuple(max(1, round(p * scale)) for p in pattern)


def derive_widths(base: int, multipliers: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(round8(base * m) for m in multipliers)


def derive_growth(base: float) -> int:
    """A dense stage's growth rate: half the base width (DenseNet's stem, 2 x growth, at stem_ratio 1)."""
    return max(1, int(base) // 2)


@dataclass(frozen=True)
class Space:
    """A validated design space; `sample` gives ArchConfigs, `contains` tells whether one belongs."""

    name: str
    description: str
    dims: dict[str, Dimension]
    # `absolute`: the sampler proposes the widths (base_width) itself. `fitted`: it proposes the shape and a FLOPs
    # target, and space.fitting solves the base width (and lowers the depth scale where needed) to meet it.
    scale: str = "absolute"

    @classmethod
    def from_dict(cls, data: Any, default_name: str = "space") -> Space:
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
        space = cls(str(data.get("name", default_name)), str(data.get("description", "")),
                    {k: Dimension.from_spec(k, raw[k]) for k in known if k in raw}, scale)
        space._check_lengths()
        space._check_values()
        return space

    @classmethod
    def from_yaml(cls, path: str | Path) -> Space:
        """Load a space file; a bare name ('default') means a shipped space."""
        path = Path(path)
        if not path.exists() and (SPACES_DIR / f"{path.name}.yaml").exists():
            path = SPACES_DIR / f"{path.name}.yaml"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
            raise ConvspaceError(f"space: no file {str(path)!r} (shipped spaces: {shipped})")
        return cls.from_dict(read_yaml(path, "space"), default_name=path.stem)

    def _check_lengths(self) -> None:
        lists = [v for d in ("depth_pattern", "width_multipliers") for v in self.dims[d].candidates()]
        if not all(isinstance(v, tuple) for v in lists) or len({len(v) for v in lists}) != 1:
            raise ConvspaceError("dimensions.depth_pattern: every depth pattern and width multiplier list must be a list of one length (the number of stages)")
        if not 1 <= self.num_stages <= MAX_STAGES:
            refuse("dimensions.depth_pattern", f"must give 1..{MAX_STAGES} stages", self.num_stages)

    def _check_values(self) -> None:
        """Check every value of every dimension against the genome's rule for its field, exhaustively, at load.

        A value that only some sampled points would reach must fail here, naming the dimension, not in the
        middle of a search. Derived dimensions must be positive numbers, and every depth they derive is checked.
        """
        for name, rule in _DIMENSION_RULES.items():
            for value in self.dim(name).checked_values():
                rule(f"dimensions.{name}", value)
        for name in FINITE_DIMS:
            for value in self.dims[name].checked_values():
                for number in value if isinstance(value, tuple) else (value,):
                    if isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0:
                        refuse(f"dimensions.{name}", "must hold numbers above 0", value)
        for pattern in self.dims["depth_pattern"].candidates():
            for scale in self.dims["depth_scale"].candidates():
                for depth in derive_depths(pattern, scale):
                    STAGE_RULES["depth"](f"dimensions.depth_pattern: {list(pattern)} x depth_scale {scale} gives a depth that", depth)

    @property
    def num_stages(self) -> int:
        return len(self.dims["depth_pattern"].candidates()[0])

    def dim(self, name: str) -> Dimension:
        """A dimension by name; one added since the space was written has its old meaning (ADDED_DIMS)."""
        if name == "dense_kernel" and name not in self.dims:
            return self.dims["kernel"]  # a space without it has one kernel dimension for every conv
        return self.dims[name] if name in self.dims else _ADDED[name]

    def kernel_dim(self, conv: str) -> str:
        """The dimension that sets a conv's kernel: `dense_kernel` for the dense-cost convs where the space has it."""
        return "dense_kernel" if conv in DENSE_KERNEL_CONVS and "dense_kernel" in self.dims else "kernel"

    def _stage_value(self, trial: Suggester, name: str, stage: int, shared: dict[str, Any]) -> Any:
        dim = self.dim(name)
        if dim.per_stage:
            return dim.suggest(trial, f"{name}_s{stage}")
        if name not in shared:
            shared[name] = dim.suggest(trial, name)
        return shared[name]

    def sample(self, trial: Suggester) -> ArchConfig:
        """One ArchConfig from an Optuna trial (or a SeededSuggester)."""
        net = {name: self.dims[name].suggest(trial, name) for name in NETWORK_DIMS}
        depths = derive_depths(net["depth_pattern"], net["depth_scale"])
        widths = derive_widths(net["base_width"], net["width_multipliers"])
        stem = StemConfig(type=net["stem"], width=round8(net["stem_ratio"] * widths[0]), norm=net["stem_norm"])
        shared: dict[str, Any] = {}
        stages: list[dict[str, Any]] = []
        for i, (depth, width) in enumerate(zip(depths, widths)):
            block = self._stage_value(trial, "block", i, shared)
            if block == "dense":
                previous = stages[-1]["width"] if stages else stem.width
                stages.append(self._dense_stage(trial, i, shared, depth, previous, derive_growth(net["base_width"])))
                continue
            conv = {"basic": "dense", "convmod": "depthwise"}.get(block) or self._stage_value(trial, "conv", i, shared)
            groups = self._stage_value(trial, "groups", i, shared) if conv in GROUPED_CONVS else 1
            radix = self._stage_value(trial, "radix", i, shared) if conv == "splat" else DEFAULT_RADIX
            stages.append(dict(depth=depth, width=width, block=block, conv=conv, groups=groups, radix=radix,
                               kernel=3 if conv == "deformable" else self._stage_value(trial, self.kernel_dim(conv), i, shared),
                               expansion=float(self._stage_value(trial, "expansion", i, shared)),
                               attention=self._stage_value(trial, "attention", i, shared),
                               dilation=self._stage_value(trial, "dilation", i, shared) if dilates(i, net["downsample"]) else 1))
        fields = {k: net[k] for k in NETWORK_DIMS if k not in FINITE_DIMS and k not in ("stem", "stem_norm")}
        fields["layer_scale_init"] = float(fields["layer_scale_init"])
        fields["drop_path_rate"] = float(fields["drop_path_rate"])
        return _fit_groups(stem, stages, fields)

    def _dense_stage(self, trial: Suggester, i: int, shared: dict[str, Any], depth: int, previous: int, growth: int) -> dict[str, Any]:
        """A dense stage's fields: only its own dimensions are asked (compression only where a transition enters it)."""
        compression = float(self._stage_value(trial, "compression", i, shared)) if i > 0 else DEFAULT_COMPRESSION
        first_in = transition_width(previous, compression) if i > 0 else previous
        return dict(depth=depth, width=first_in + depth * growth, block="dense", conv="dense", groups=1, radix=DEFAULT_RADIX,
                    kernel=self._stage_value(trial, self.kernel_dim("dense"), i, shared),
                    expansion=float(self._stage_value(trial, "expansion", i, shared)), attention="none", dilation=1,
                    growth=growth, compression=compression)

    def _scales(self, cfg: ArchConfig) -> list[tuple[Any, Any, Any]]:
        """Every (base_width, width_multipliers, stem_ratio) under which `sample` gives cfg's stem width, the widths of its
        residual stages and the growth of its dense stages (a dense stage's width follows from its growth: the genome checks it)."""
        d, found = self.dims, []
        for base in d["base_width"].candidates():
            if any(s.block == "dense" and s.growth != derive_growth(base) for s in cfg.stages):
                continue
            for multipliers in d["width_multipliers"].candidates():
                widths = derive_widths(base, multipliers)
                if any(s.block != "dense" and s.width != w for s, w in zip(cfg.stages, widths)):
                    continue
                found += [(base, multipliers, r) for r in d["stem_ratio"].candidates() if round8(r * widths[0]) == cfg.stem.width]
        return found

    def _asked(self, cfg: ArchConfig, i: int) -> dict[str, Any]:
        """The stage dimensions `sample` asks at stage i (the conditions of the module docstring) with cfg's values."""
        stage = cfg.stages[i]
        if stage.block == "dense":
            asked = {"block": stage.block, "expansion": stage.expansion, self.kernel_dim("dense"): stage.kernel}
            return {**asked, "compression": stage.compression} if i > 0 else asked
        asked = {"block": stage.block, "expansion": stage.expansion, "attention": stage.attention}
        if stage.block == "bottleneck":
            asked["conv"] = stage.conv
        if stage.conv in GROUPED_CONVS:
            asked["groups"] = stage.groups
        if stage.conv == "splat":
            asked["radix"] = stage.radix
        if stage.conv != "deformable":
            asked[self.kernel_dim(stage.conv)] = stage.kernel
        if dilates(i, cfg.downsample):
            asked["dilation"] = stage.dilation
        return asked

    def sample_random(self, n: int, seed: int = 0) -> list[ArchConfig]:
        """n seeded random points (same seed, same points)."""
        rng = random.Random(seed)
        return [self.sample(SeededSuggester(rng)) for _ in range(n)]

    def contains(self, cfg: ArchConfig) -> bool:
        """Whether the space can produce exactly this network."""
        d = self.dims
        depths = tuple(s.depth for s in cfg.stages)
        if len(depths) != self.num_stages:
            return False
        if not any(derive_depths(p, s) == depths for p in d["depth_pattern"].candidates() for s in d["depth_scale"].candidates()):
            return False
        if not self._scales(cfg):
            return False
        network = {**{k: getattr(cfg, k) for k in NETWORK_DIMS if hasattr(cfg, k)}, "stem": cfg.stem.type, "stem_norm": cfg.stem.norm}
        if not all(d[k].allows(v) for k, v in network.items() if k not in FINITE_DIMS):
            return False
        sampled: dict[str, set[Any]] = {}  # the values each stage dimension took where it was sampled
        for i, (stage, first_in) in enumerate(zip(cfg.stages, cfg.first_block_inputs())):
            checks = {k: v for k, v in self._asked(cfg, i).items() if k not in ("groups", "radix")}  # fitted to channels: below
            if not all(self.dim(k).allows(v) for k, v in checks.items()):
                return False
            for k, v in checks.items():
                sampled.setdefault(k, set()).add(v)
            if stage.conv in GROUPED_CONVS:
                channels = grouped_channels(stage.conv, stage.block, stage.width, stage.inner_width, first_in, cfg.dw_position)
                radixes = self.dim("radix").candidates() if stage.conv == "splat" else [DEFAULT_RADIX]
                if (stage.groups, stage.radix) not in {fit_groups(stage.conv, g, r, channels)[1:] for g in d["groups"].candidates() for r in radixes}:
                    return False
        # a dimension that is not per stage took one value for all stages (it was sampled once)
        return all(len(values) == 1 or self.dim(k).per_stage for k, values in sampled.items())

    def params_of(self, cfg: ArchConfig) -> dict[str, Any] | None:
        """The params (as an Optuna trial stores them) under which `sample` gives exactly `cfg`, or None.

        The inverse of `sample`, for enqueuing published networks as trials (the warm start). Each value is read off
        the config where `sample` would ask for it (a dimension shared by the stages: at the first stage that asks),
        then the params are replayed through `sample` and kept only if they give `cfg` back."""
        params: dict[str, Any] = {}

        def put(name: str, label: str, value: Any) -> bool:
            dim = self.dim(name)
            if not dim.allows(value):
                return False
            if dim.kind != "value" and not (dim.kind == "choice" and len(dim.values) == 1):
                params.setdefault(label, _encode(value))
            return True

        d = self.dims
        depths = tuple(s.depth for s in cfg.stages)
        derived = {
            ("depth_pattern", "depth_scale"): [(p, s) for p in d["depth_pattern"].candidates() for s in d["depth_scale"].candidates()
                                               if derive_depths(p, s) == depths],
            ("base_width", "width_multipliers", "stem_ratio"): self._scales(cfg),
        }
        for names, found in derived.items():
            if not found or not all(put(n, n, v) for n, v in zip(names, found[0])):
                return None
        network = {**{k: getattr(cfg, k) for k in NETWORK_DIMS if hasattr(cfg, k)}, "stem": cfg.stem.type, "stem_norm": cfg.stem.norm}
        if not all(put(k, k, v) for k, v in network.items() if k not in FINITE_DIMS):
            return None
        for i in range(len(cfg.stages)):
            asked = self._asked(cfg, i)
            if not all(put(k, f"{k}_s{i}" if self.dim(k).per_stage else k, v) for k, v in asked.items()):
                return None
        try:
            replayed = self.sample(Replay(params))
        except (KeyError, ConvspaceError):
            return None
        return params if replayed == cfg else None


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


_ADDED = {name: Dimension.from_spec(name, spec) for name, spec in ADDED_DIMS.items()}


def dilates(stage: int, downsample: str) -> bool:
    """Whether a stage can dilate: not the first (no stride to replace), and only with strided downsampling."""
    return stage > 0 and downsample == "strided"


def fit_groups(conv: str, groups: int, radix: int, channels: list[int]) -> tuple[str, int, int]:
    """(conv, groups, radix) with the sampled cardinality (and radix) reduced to the largest divisors the conv's
    channels allow: radix divides them, groups x radix divides them, and for splat groups divides its MLP's width."""
    if conv != "splat":
        radix = DEFAULT_RADIX
        g = math.gcd(groups, *channels)
    else:
        radix = math.gcd(radix, *channels)
        g = math.gcd(groups, *(c // radix for c in channels), *(splat_attention_channels(c, radix) for c in channels))
    if g < GROUPED_CONVS[conv]:  # a grouped or shuffle conv of 1 group is a dense one
        return "dense", 1, DEFAULT_RADIX
    return conv, g, radix


# The genome rule each dimension's values must pass (the derived dimensions are checked on what they derive).
_DIMENSION_RULES: dict[str, Rule] = {
    "stem": STEM_RULES["type"], "stem_norm": STEM_RULES["norm"],
    **{name: ARCH_RULES[name] for name in NETWORK_DIMS if name in ARCH_RULES},
    **{name: STAGE_RULES[name] for name in STAGE_DIMS if name != "dense_kernel"}, "dense_kernel": STAGE_RULES["kernel"],
}


def _fit_groups(stem: StemConfig, stages: list[dict[str, Any]], fields: dict[str, Any]) -> ArchConfig:
    """Fit each sampled cardinality (and radix) to the channels of its stage's convs (see `fit_groups`)."""
    fixed, previous = [], stem.width
    for i, s in enumerate(stages):
        if s["conv"] in GROUPED_CONVS:
            first_in = previous if fields["downsample"] == "strided" or i == 0 else s["width"]
            inner = inner_width(s["width"], s["expansion"])
            channels = grouped_channels(s["conv"], s["block"], s["width"], inner, first_in, fields["dw_position"])
            conv, groups, radix = fit_groups(s["conv"], s["groups"], s["radix"], channels)
            s = {**s, "conv": conv, "groups": groups, "radix": radix}
        fixed.append(StageConfig(**s))
        previous = s["width"]
    return ArchConfig(stem=stem, stages=tuple(fixed), **fields)
