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
from typing import Any

from space.config import ArchConfig, StageConfig, StemConfig, grouped_channels
from space.dimensions import (  # re-exported: the suggesters are part of what a space is sampled with
    FINITE_DIMS,
    NETWORK_DIMS,
    STAGE_DIMS,
    Dimension,
    Replay,
    SeededSuggester,
    Suggester,
    encode_choice,
)
from space.errors import ConvspaceError
from space.rules import DEFAULT_COMPRESSION, DEFAULT_RADIX, GROUPED_CONVS
from space.widths import inner_width, round8, splat_attention_channels, transition_width

__all__ = ["Space", "Dimension", "Replay", "SeededSuggester", "Suggester", "NETWORK_DIMS", "STAGE_DIMS", "FINITE_DIMS"]

# Dimensions added after spaces were first written, and what a space without them means.
ADDED_DIMS = {"dilation": {"value": 1}, "radix": {"value": DEFAULT_RADIX}, "compression": {"value": DEFAULT_COMPRESSION}}
# `dense_kernel`, where a space has it, is the kernel of the convs whose cost grows with in x out channels x k^2
# (dense, grouped, shuffle, split attention, separable), and `kernel` that of depthwise convs (ConvNeXt's, ConvMod's):
# the papers enlarge only depthwise kernels (ConvNeXt 7x7, RepLKNet 31x31, Conv2Former 11x11), and a dense 21x21 conv
# costs 49x a 3x3 one. A space without it samples one `kernel` for both, as before.
DENSE_KERNEL_CONVS = ("dense", "grouped", "shuffle", "splat", "separable")


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
        """A space from a parsed space file (validated: see space.space_file)."""
        from space.space_file import space_from_dict

        return space_from_dict(data, default_name)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Space:
        """Load a space file; a bare name ('default') means a shipped space (see space.space_file)."""
        from space.space_file import load_space

        return load_space(path)

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
                params.setdefault(label, encode_choice(value))
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
