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

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from space.errors import ConvspaceError, refuse
from space.genome_versions import GENOME_VERSION, build_checked, upgrade, without_later_defaults
from space.rules import (  # the genome's vocabulary and field rules: what every other module reads from here
    ARCH_RULES,
    DEFAULT_COMPRESSION,
    DEFAULT_GROWTH,
    DEFAULT_RADIX,
    GROUPED_CONVS,
    MAX_STAGES,
    STAGE_RULES,
    STEM_RULES,
    check_fields,
    check_int,
)
from space.widths import inner_width, splat_attention_channels, transition_width


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
        data = without_later_defaults(self)
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
        raw = upgrade("config", raw, cls, version)
        stem = build_checked(StemConfig, upgrade("stem", raw["stem"], StemConfig, version), "stem")
        stages_raw = raw["stages"]
        if not isinstance(stages_raw, (list, tuple)):
            refuse("stages", "must be a list of stages", stages_raw)
        stages = tuple(
            build_checked(StageConfig, upgrade(f"stages[{i}]", s, StageConfig, version), f"stages[{i}]")
            for i, s in enumerate(stages_raw)
        )
        return build_checked(cls, {**raw, "stem": stem, "stages": stages}, "")

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


