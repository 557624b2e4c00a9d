"""One concrete network of the design space (the genome): frozen plain data, strict to load.

Nothing is left to hidden defaults: every field must be given, unknown keys are refused (typos must
not silently change a network), and every error names the field and what is allowed.

Stored configs (study trials, exports) carry the genome `version` they were written in; one without it
is version 1 (written before versions existed). Loading upgrades an older version: a field added in
version N is declared with `field(default=..., metadata={"since": N})` and a config of an older version
gets that default (it must not name the field). The `hash` does not change across versions: it leaves
out `version` and every field added after version 1 that holds its default, so a stored config keeps
its hash after an upgrade, and studies keep deduplicating against the hashes they stored.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass
from typing import Any

from space.errors import ConvspaceError, refuse
from space.widths import inner_width, splat_attention_channels, transition_width

STEMS = ("patchify", "resnet", "conv2former", "deep")
BLOCKS = ("basic", "bottleneck", "convmod", "dense")
CONVS = ("dense", "grouped", "depthwise", "shuffle", "separable", "splat", "deformable")
# The convs that take `groups`, with the fewest groups each allows (dense and depthwise keep groups 1).
GROUPED_CONVS = {"grouped": 2, "shuffle": 2, "separable": 1, "splat": 1, "deformable": 1}
DILATIONS = (1, 2, 4)
RADIX_MAX = 4
DEFAULT_RADIX = 2  # ResNeSt's and timm SplitAttn's; other convs keep it so that a stage has one way to be written
# DenseNet's growth rate (DenseNet-121/169/201) and DenseNet-BC's transition compression; other blocks keep them, as radix
DEFAULT_GROWTH = 32
DEFAULT_COMPRESSION = 0.5
ATTENTIONS = ("none", "se", "cbam")
NORMS = ("bn", "ln", "gn")
ACTS = ("relu", "gelu", "silu")
DOWNSAMPLES = ("strided", "separate")
COUNTS = ("all", "one")
DW_POSITIONS = ("middle", "first")
KERNEL_MIN, KERNEL_MAX = 3, 21
MAX_STAGES = 6
GENOME_VERSION = 3  # raise it with each field added (and give that field metadata={"since": GENOME_VERSION})


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """Refuse a value outside a fixed set of names (or numbers)."""
    if isinstance(value, bool) or value not in allowed:
        refuse(name, f"must be one of {', '.join(map(str, allowed))}", value)


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


def check_dilation(name: str, value: Any) -> None:
    """A stage's dilation replaces one stride of 2 or two of them (torchvision's replace_stride_with_dilation)."""
    check_int(name, value, 1)
    check_choice(name, value, DILATIONS)


Rule = Callable[[str, Any], None]


def one_of(allowed: tuple[str, ...]) -> Rule:
    """The rule of a field that takes one of fixed names."""
    return lambda name, value: check_choice(name, value, allowed)


def int_in(low: int, high: int | None = None) -> Rule:
    """The rule of an integer field in [low, high]."""
    return lambda name, value: check_int(name, value, low, high)


def float_in(low: float, high: float) -> Rule:
    """The rule of a number field in [low, high]."""
    return lambda name, value: check_float(name, value, low, high)


# The rules of each field on its own (cross-field rules sit in the classes): the configs check their fields
# with them, and a space checks every value of every dimension with them at load (space.choices).
STEM_RULES: dict[str, Rule] = {"type": one_of(STEMS), "width": int_in(1), "norm": one_of(NORMS)}
STAGE_RULES: dict[str, Rule] = {
    "depth": int_in(1, 256), "width": int_in(1), "block": one_of(BLOCKS), "kernel": check_kernel,
    "expansion": float_in(0.0625, 16), "conv": one_of(CONVS), "groups": int_in(1), "attention": one_of(ATTENTIONS),
    "dilation": check_dilation, "radix": int_in(1, RADIX_MAX), "growth": int_in(1, 1024), "compression": float_in(0.0625, 1.0),
}
ARCH_RULES: dict[str, Rule] = {
    "downsample": one_of(DOWNSAMPLES), "norm": one_of(NORMS), "act": one_of(ACTS), "norms_per_block": one_of(COUNTS),
    "acts_per_block": one_of(COUNTS), "dw_position": one_of(DW_POSITIONS), "conv_bias": check_bool,
    "layer_scale_init": float_in(0.0, 10.0), "head_width": int_in(0), "head_norm": check_bool,
    "drop_path_rate": float_in(0.0, 0.99), "num_classes": int_in(0), "in_chans": int_in(1),
}


def check_fields(config: Any, rules: dict[str, Rule]) -> None:
    """Check each field that has a rule, in declaration order (the first bad field is the one named)."""
    for f in fields(config):
        if f.name in rules:
            rules[f.name](f.name, getattr(config, f.name))


@dataclass(frozen=True)
class StemConfig:
    """The stem: every type reduces the input 4x. `norm` is the stem's own (Conv2Former: BN stem, LN blocks)."""

    type: str
    width: int
    norm: str

    def __post_init__(self) -> None:
        check_fields(self, STEM_RULES)
        if self.type in ("deep", "conv2former") and self.width % 2:
            refuse("width", f"must be even for the {self.type} stem (its first convs have width/2)", self.width)


@dataclass(frozen=True)
class StageConfig:
    """One stage: `depth` blocks of one family at `width` output channels.

    `expansion` is the inner width over the block width: 0.25 for a ResNet bottleneck, 4 for an inverted
    one (ConvNeXt) and the MLP ratio of a ConvMod block. `conv` is the spatial conv of basic/bottleneck
    blocks: dense, grouped, depthwise, shuffle (every conv of the bottleneck grouped, ShuffleNet's channel
    shuffle after each but the last), separable (k x 1 then 1 x k), splat (ResNeSt's split attention over
    `radix` splits; a strided one strides by a 3x3 average pool after it, ResNeSt's avd) or deformable
    (torchvision's DeformConv2d with its offset conv, 3x3). `groups` is the cardinality of the convs that
    take it (1 otherwise). `dilation` > 1: the stage keeps its input's resolution and dilates its spatial
    convs instead (the first of them at the previous stage's dilation, as timm and torchvision do).

    `dense` (DenseNet-BC): `depth` pre-activation layers, each a norm-act-1x1 conv to `expansion` x `growth`
    channels (DenseNet's bottleneck, 4 x growth) then a norm-act-`kernel` conv to `growth` channels, concatenated to
    its input; a later stage is entered through a transition (norm-act, 1x1 conv to `compression` x its input
    channels, 2x2 average pool), and the last stage of a network ends in a norm-act. `width` is then what the
    stage puts out (its input, after the transition, plus `depth` x `growth`): derived, and checked.
    """

    depth: int
    width: int
    block: str
    kernel: int
    expansion: float
    conv: str
    groups: int
    attention: str
    dilation: int = field(default=1, metadata={"since": 2})
    radix: int = field(default=DEFAULT_RADIX, metadata={"since": 2})
    growth: int = field(default=DEFAULT_GROWTH, metadata={"since": 3})
    compression: float = field(default=DEFAULT_COMPRESSION, metadata={"since": 3})

    def __post_init__(self) -> None:
        check_fields(self, STAGE_RULES)
        fewest = GROUPED_CONVS.get(self.conv)
        if fewest is None and self.groups != 1:
            refuse("groups", f"must be 1 unless conv takes groups ({', '.join(GROUPED_CONVS)}); conv is {self.conv}", self.groups)
        if fewest is not None and self.groups < fewest:
            refuse("groups", f"must be >= {fewest} for a {self.conv} conv", self.groups)
        if self.conv != "splat" and self.radix != DEFAULT_RADIX:
            refuse("radix", f"must stay {DEFAULT_RADIX} (its default) unless conv is splat; conv is {self.conv}", self.radix)
        if self.block in ("basic", "dense") and self.conv != "dense":
            refuse("conv", f"must be dense for {self.block} blocks (use a bottleneck for the other convs)", self.conv)
        if self.block == "dense":
            if self.attention != "none":
                refuse("attention", "must be none for dense blocks (their layers add growth channels, not a residual to excite)", self.attention)
            if self.dilation != 1:
                refuse("dilation", "must be 1 for dense blocks (a dense stage is entered through its pooling transition)", self.dilation)
        else:
            for name, default in (("growth", DEFAULT_GROWTH), ("compression", DEFAULT_COMPRESSION)):
                if getattr(self, name) != default:
                    refuse(name, f"must stay {default} (its default) unless block is dense; block is {self.block}", getattr(self, name))
        if self.block == "convmod" and self.conv != "depthwise":
            refuse("conv", "must be depthwise for convmod blocks (its modulation conv is depthwise)", self.conv)
        if self.conv == "deformable" and self.kernel != 3:
            refuse("kernel", "must be 3 for a deformable conv (its offsets are learnt for a 3x3 grid)", self.kernel)

    @property
    def inner_width(self) -> int:
        """Width of the expanded (or reduced) middle of a block (of a dense layer: its bottleneck, over the growth)."""
        return inner_width(self.growth if self.block == "dense" else self.width, self.expansion)


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
        if not 1 <= len(self.stages) <= MAX_STAGES:
            refuse("stages", f"must hold 1..{MAX_STAGES} stages", len(self.stages))
        check_fields(self, ARCH_RULES)
        self._check_dilations()
        self._check_dense()
        self._check_groups()

    def _check_dilations(self) -> None:
        """Dilation replaces the stride of a stage's first block: only later stages of strided networks have one."""
        for i, stage in enumerate(self.stages):
            if stage.dilation == 1:
                continue
            if i == 0:
                refuse("stages[0].dilation", "must be 1 (the first stage has no stride to replace: the stem reduces 4x)", stage.dilation)
            if self.downsample == "separate":
                refuse(f"stages[{i}].dilation", "must be 1 when downsample is separate (its 2x2/s2 layer is a patch merge, "
                       "not a stride to dilate; use downsample strided)", stage.dilation)

    def _check_dense(self) -> None:
        """A dense stage's width is what it puts out: its input (after the transition) plus depth x growth; stage 0
        has no transition, so its compression stays the default (two values would name one network)."""
        for i, (stage, first_in) in enumerate(zip(self.stages, self.first_block_inputs())):
            if stage.block != "dense":
                continue
            if i == 0 and stage.compression != DEFAULT_COMPRESSION:
                refuse("stages[0].compression", f"must stay {DEFAULT_COMPRESSION} (the first stage has no transition to compress)",
                       stage.compression)
            width = first_in + stage.depth * stage.growth
            if stage.width != width:
                entered = f"its {first_in} input channels" + (f" (after a transition of compression {stage.compression})" if i else "")
                refuse(f"stages[{i}].width", f"must be {width} for this dense stage ({entered} + {stage.depth} layers x growth "
                       f"{stage.growth})", stage.width)

    def _check_groups(self) -> None:
        """Grouped convs need their channels divisible by the groups; which channels depends on the layout."""
        for i, (stage, first_in) in enumerate(zip(self.stages, self.first_block_inputs())):
            if stage.conv not in GROUPED_CONVS:
                continue
            for channels in grouped_channels(stage.conv, stage.block, stage.width, stage.inner_width, first_in, self.dw_position):
                problem = groups_problem(stage, channels)
                if problem:
                    raise ConvspaceError(f"stages[{i}].{problem}")

    def first_block_inputs(self) -> list[int]:
        """Input width of each stage's first block (a separate downsampler already maps to the stage width; a dense
        stage's transition to the compressed width of the previous stage)."""
        inputs, previous = [], self.stem.width
        for i, stage in enumerate(self.stages):
            if stage.block == "dense":
                inputs.append(transition_width(previous, stage.compression) if i > 0 else previous)
            else:
                inputs.append(stage.width if self.downsample == "separate" and i > 0 else previous)
            previous = stage.width
        return inputs

    # ---- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) for JSON/YAML, headed by the genome version it is written in."""
        data = asdict(self)
        data["stages"] = [dict(s) for s in data["stages"]]
        return {"version": GENOME_VERSION, **data}

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, so equal configs give equal strings and hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_yaml(self) -> str:
        """YAML for humans (model-factory entries, `inspect`)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def hash(self) -> str:
        """Stable short identity of the network (dedup of trials, export records), the same in every genome version.

        Taken over the canonical JSON without `version` and without fields added after version 1 that hold
        their default: a config loaded from an older version keeps the hash it was stored with.
        """
        data = _without_later_defaults(self)
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        """Load strictly: every field of the config's version required, unknown keys refused, errors name the field
        path; a config of an older genome version is upgraded (see the module docstring)."""
        if not isinstance(data, Mapping):
            refuse("config", "must be a mapping of fields", type(data).__name__)
        raw = dict(data)
        version = raw.pop("version", 1)
        check_int("config.version", version, 1)
        if version > GENOME_VERSION:
            refuse("config.version", f"this convspace reads genome versions 1..{GENOME_VERSION} (a newer one wrote it)", version)
        raw = _upgrade("config", raw, cls, version)
        stem = _build(StemConfig, _upgrade("stem", raw["stem"], StemConfig, version), "stem")
        stages_raw = raw["stages"]
        if not isinstance(stages_raw, (list, tuple)):
            refuse("stages", "must be a list of stages", stages_raw)
        stages = tuple(
            _build(StageConfig, _upgrade(f"stages[{i}]", s, StageConfig, version), f"stages[{i}]")
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


def grouped_channels(conv: str, block: str, width: int, inner: int, first_in: int, dw_position: str) -> list[int]:
    """The channel counts a stage's grouped convs see: its spatial conv's (input = output), or every conv's for shuffle."""
    if conv == "shuffle":
        return sorted({first_in, width, inner})
    spatial_first = block == "bottleneck" and dw_position == "first"
    return sorted({first_in, width}) if spatial_first else [inner]


def groups_problem(stage: StageConfig, channels: int) -> str | None:
    """What a stage's groups (and radix) break on its conv of `channels` channels ('field: ...'), or None."""
    where = f"the {channels} channels of the {stage.conv} conv (width {stage.width}, expansion {stage.expansion})"
    if stage.conv != "splat":
        return f"groups: must divide {where}, got {stage.groups}" if channels % stage.groups else None
    # timm's SplitAttn: one conv with groups x radix groups, then an MLP grouped by `groups`
    if channels % stage.radix:
        return f"radix: must divide {where}, got {stage.radix}"
    if channels % (stage.groups * stage.radix):
        return f"groups: times radix {stage.radix} must divide {where}, got {stage.groups}"
    attn = splat_attention_channels(channels, stage.radix)
    return f"groups: must divide the {attn} channels of the split attention's MLP ({where}), got {stage.groups}" if attn % stage.groups else None


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


def _since(f: Field) -> int:
    """The genome version that added a field (1: it was there before versions)."""
    return f.metadata.get("since", 1)


def _upgrade(path: str, data: Any, cls: type, version: int) -> dict[str, Any]:
    """Check keys against the fields of `version`, then give the fields added since their defaults."""
    if not isinstance(data, Mapping):
        refuse(path, "must be a mapping of fields", type(data).__name__)
    later = {f.name: f for f in fields(cls) if _since(f) > version}
    for key in data:
        if key in later:
            raise ConvspaceError(
                f"{path}.{key}: not a field of genome version {version} (added in version {_since(later[key])}); "
                f"write version: {GENOME_VERSION} with every field of it"
            )
    check_keys(path, data, [f.name for f in fields(cls) if f.name not in later])
    return {**{name: f.default for name, f in later.items()}, **data}


def _without_later_defaults(config: Any) -> Any:
    """The config as plain data, leaving out fields added after version 1 that hold their default (for the hash)."""
    data = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if _since(f) > 1 and f.default is not MISSING and value == f.default:
            continue
        if isinstance(value, tuple):
            value = [_without_later_defaults(v) for v in value]
        data[f.name] = _without_later_defaults(value) if is_dataclass(value) else value
    return data


def _build(cls: type, values: dict[str, Any], path: str) -> Any:
    """Construct and prefix the field path onto any validation error."""
    try:
        return cls(**values)
    except ConvspaceError as exc:
        if not path:
            raise
        raise ConvspaceError(f"{path}.{exc}") from None
