"""One concrete network of the design space (the genome): frozen plain data, strict to load.

Nothing is left to hidden defaults: every field must be given, unknown keys are refused (typos must
not silently change a network), and every error names the field and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from space.errors import ConvspaceError, refuse

STEMS = ("patchify", "resnet", "conv2former", "deep")
BLOCKS = ("basic", "bottleneck", "convmod")
CONVS = ("dense", "grouped", "depthwise")
ATTENTIONS = ("none", "se", "cbam")
NORMS = ("bn", "ln", "gn")
ACTS = ("relu", "gelu", "silu")
DOWNSAMPLES = ("strided", "separate")
COUNTS = ("all", "one")
DW_POSITIONS = ("middle", "first")
KERNEL_MIN, KERNEL_MAX = 3, 21


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Refuse a value outside a fixed set of names."""
    if value not in allowed:
        refuse(name, f"must be one of {', '.join(allowed)}", value)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Refuse a non-integer or an integer outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        refuse(name, "must be an integer", value)
    if value < low or (high is not None and value > high):
        refuse(name, f"must be in {low}..{high}" if high is not None else f"must be >= {low}", value)


def check_float(name: str, value: Any, low: float, high: float) -> None:
    """Refuse a non-number or a number outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        refuse(name, "must be a number", value)
    if not low <= value <= high:
        refuse(name, f"must be in [{low}, {high}]", value)


def check_bool(name: str, value: Any) -> None:
    """Refuse anything but true/false (YAML 'yes' already arrives as a bool)."""
    if not isinstance(value, bool):
        refuse(name, "must be true or false", value)


def check_kernel(name: str, value: Any) -> None:
    """Kernels are odd so that 'same' padding keeps the feature map centred."""
    check_int(name, value, KERNEL_MIN, KERNEL_MAX)
    if value % 2 == 0:
        refuse(name, f"must be odd ({KERNEL_MIN}, {KERNEL_MIN + 2}, ..., {KERNEL_MAX})", value)


@dataclass(frozen=True)
class StemConfig:
    """The stem: every type reduces the input 4x. `norm` is the stem's own (Conv2Former: BN stem, LN blocks)."""

    type: str
    width: int
    norm: str

    def __post_init__(self) -> None:
        check_choice("type", self.type, STEMS)
        check_int("width", self.width, 1)
        check_choice("norm", self.norm, NORMS)
        if self.type in ("deep", "conv2former") and self.width % 2:
            refuse("width", f"must be even for the {self.type} stem (its first convs have width/2)", self.width)


@dataclass(frozen=True)
class StageConfig:
    """One stage: `depth` blocks of one family at `width` output channels.

    `expansion` is the inner width over the block width: 0.25 for a ResNet bottleneck, 4 for an inverted
    one (ConvNeXt) and the MLP ratio of a ConvMod block. `conv` is the spatial conv of basic/bottleneck
    blocks; `groups` is the cardinality of a grouped conv (1 otherwise).
    """

    depth: int
    width: int
    block: str
    kernel: int
    expansion: float
    conv: str
    groups: int
    attention: str

    def __post_init__(self) -> None:
        check_int("depth", self.depth, 1, 256)
        check_int("width", self.width, 1)
        check_choice("block", self.block, BLOCKS)
        check_kernel("kernel", self.kernel)
        check_float("expansion", self.expansion, 0.0625, 16)
        check_choice("conv", self.conv, CONVS)
        check_int("groups", self.groups, 1)
        check_choice("attention", self.attention, ATTENTIONS)
        if self.conv != "grouped" and self.groups != 1:
            refuse("groups", f"must be 1 unless conv is grouped (conv is {self.conv})", self.groups)
        if self.conv == "grouped" and self.groups < 2:
            refuse("groups", "must be >= 2 for a grouped conv", self.groups)
        if self.block == "basic" and self.conv != "dense":
            refuse("conv", "must be dense for basic blocks (use a bottleneck for grouped/depthwise)", self.conv)
        if self.block == "convmod" and self.conv != "depthwise":
            refuse("conv", "must be depthwise for convmod blocks (its modulation conv is depthwise)", self.conv)

    @property
    def inner_width(self) -> int:
        """Width of the expanded (or reduced) middle of a block."""
        return max(1, round(self.width * self.expansion))


@dataclass(frozen=True)
class ArchConfig:
    """A whole network, fully concrete. Micro design choices are shared by all stages (as in the papers)."""

    stem: StemConfig
    stages: tuple[StageConfig, ...]
    downsample: str
    norm: str
    act: str
    norms_per_block: str
    acts_per_block: str
    dw_position: str
    conv_bias: bool
    layer_scale_init: float
    head_width: int
    head_norm: bool
    drop_path_rate: float
    num_classes: int
    in_chans: int

    def __post_init__(self) -> None:
        if not isinstance(self.stem, StemConfig):
            refuse("stem", "must be a StemConfig", self.stem)
        if not isinstance(self.stages, tuple) or not all(isinstance(s, StageConfig) for s in self.stages):
            refuse("stages", "must be a tuple of StageConfig", self.stages)
        if not 1 <= len(self.stages) <= 6:
            refuse("stages", "must hold 1..6 stages", len(self.stages))
        check_choice("downsample", self.downsample, DOWNSAMPLES)
        check_choice("norm", self.norm, NORMS)
        check_choice("act", self.act, ACTS)
        check_choice("norms_per_block", self.norms_per_block, COUNTS)
        check_choice("acts_per_block", self.acts_per_block, COUNTS)
        check_choice("dw_position", self.dw_position, DW_POSITIONS)
        check_bool("conv_bias", self.conv_bias)
        check_float("layer_scale_init", self.layer_scale_init, 0.0, 10.0)
        check_int("head_width", self.head_width, 0)
        check_bool("head_norm", self.head_norm)
        check_float("drop_path_rate", self.drop_path_rate, 0.0, 0.99)
        check_int("num_classes", self.num_classes, 0)
        check_int("in_chans", self.in_chans, 1)
        self._check_groups()

    def _check_groups(self) -> None:
        """A grouped conv needs its channels divisible by the groups; which channels depends on the layout."""
        for i, (stage, first_in) in enumerate(zip(self.stages, self.first_block_inputs())):
            if stage.conv != "grouped":
                continue
            spatial_first = stage.block == "bottleneck" and self.dw_position == "first"
            for channels in {first_in, stage.width} if spatial_first else {stage.inner_width}:
                if channels % stage.groups:
                    raise ConvspaceError(
                        f"stages[{i}].groups: must divide the {channels} channels of the grouped conv "
                        f"(width {stage.width}, expansion {stage.expansion}), got {stage.groups}"
                    )

    def first_block_inputs(self) -> list[int]:
        """Input width of each stage's first block (a separate downsampler already maps to the stage width)."""
        inputs, previous = [], self.stem.width
        for i, stage in enumerate(self.stages):
            inputs.append(stage.width if self.downsample == "separate" and i > 0 else previous)
            previous = stage.width
        return inputs

    # ---- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) for JSON/YAML."""
        data = asdict(self)
        data["stages"] = [dict(s) for s in data["stages"]]
        return data

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, so equal configs give equal strings and hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        """YAML for humans (model-factory entries, `inspect`)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def hash(self) -> str:
        """Stable short identity of the network (dedup of trials, export records)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        """Load strictly: every field required, unknown keys refused, errors name the field path."""
        raw = _mapping("config", data, cls)
        stem = _build(StemConfig, _mapping("stem", raw["stem"], StemConfig), "stem")
        stages_raw = raw["stages"]
        if not isinstance(stages_raw, (list, tuple)):
            refuse("stages", "must be a list of stages", stages_raw)
        stages = tuple(
            _build(StageConfig, _mapping(f"stages[{i}]", s, StageConfig), f"stages[{i}]")
            for i, s in enumerate(stages_raw)
        )
        return _build(cls, {**raw, "stem": stem, "stages": stages}, "")

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        """Inverse of `to_json`."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_yaml(cls, text: str) -> ArchConfig:
        """Inverse of `to_yaml`; a YAML syntax error becomes a user error."""
        import yaml

        try:
            return cls.from_dict(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            raise ConvspaceError(f"config: not valid YAML ({str(exc).splitlines()[0]})") from None


def check_keys(path: str, keys: Iterable[Any], allowed: Sequence[str], what: str = "field") -> None:
    """Refuse unknown keys (with a did-you-mean) and missing ones: a typo must not silently change a network."""
    keys = list(keys)
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConvspaceError(f"{path}.{key}: unknown {what}{hint}; allowed: {', '.join(allowed)}")
    missing = [n for n in allowed if n not in keys]
    if missing:
        raise ConvspaceError(f"{path}.{missing[0]}: missing {what} (required: {', '.join(missing)})")


def _mapping(path: str, data: Any, cls: type) -> dict[str, Any]:
    """Check keys against the dataclass."""
    if not isinstance(data, Mapping):
        refuse(path, "must be a mapping of fields", type(data).__name__)
    check_keys(path, data, [f.name for f in fields(cls)])
    return dict(data)


def _build(cls: type, values: dict[str, Any], path: str) -> Any:
    """Construct and prefix the field path onto any validation error."""
    try:
        return cls(**values)
    except ConvspaceError as exc:
        if not path:
            raise
        raise ConvspaceError(f"{path}.{exc}") from None
