"""The layer-by-layer plan of an ArchConfig, as plain data.

Both the torch builder (`space.network`) and the analytic cost model (`space.cost`) walk this one plan,
so what is built and what is counted cannot drift apart. Every conv of the network is a `Unit`
(conv + optional norm + optional act); blocks list their units and how they are wired.
"""

from __future__ import annotations

from dataclasses import dataclass

from space.config import ArchConfig, StageConfig

CONV_NORM_ACT = "conv-norm-act"  # ResNet/ConvNeXt order
CONV_ACT_NORM = "conv-act-norm"  # Conv2Former stem and head
NORM_CONV = "norm-conv"  # separate downsampling layer (ConvNeXt/Swin)


@dataclass(frozen=True)
class Unit:
    """One conv with its optional norm and activation, in a fixed order."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int = 1
    groups: int = 1
    bias: bool = False
    norm: str | None = None
    act: str | None = None
    order: str = CONV_NORM_ACT

    @property
    def padding(self) -> int:
        """Patch convs (kernel == stride) tile without padding; the others keep 'same' padding."""
        return 0 if self.kernel == self.stride else self.kernel // 2

    @property
    def norm_channels(self) -> int:
        return self.in_ch if self.order == NORM_CONV else self.out_ch


@dataclass(frozen=True)
class StemPlan:
    units: tuple[Unit, ...]
    maxpool: bool


@dataclass(frozen=True)
class BlockPlan:
    """One residual block. `units` is the main path of basic/bottleneck blocks; convmod uses `convmod`."""

    block: str
    in_ch: int
    out_ch: int
    stride: int
    units: tuple[Unit, ...]
    shortcut: Unit | None
    residual_act: str | None
    attention: str
    layer_scale_init: float
    norm: str
    convmod: ConvModPlan | None = None


@dataclass(frozen=True)
class ConvModPlan:
    """Conv2Former block: pre-norm ConvMod (a = dw(act(1x1 x)), v = 1x1 x, proj(a*v)), then pre-norm MLP."""

    att_in: Unit
    att_dw: Unit
    value: Unit
    proj: Unit
    fc1: Unit
    pos: Unit
    fc2: Unit


@dataclass(frozen=True)
class StagePlan:
    """A stage: its first block (which may change width and resolution), then `repeats` copies of `rest`."""

    downsample: Unit | None
    first: BlockPlan
    rest: BlockPlan | None
    repeats: int
    reduction: int

    @property
    def blocks(self) -> tuple[BlockPlan, ...]:
        return (self.first,) + (self.rest,) * self.repeats if self.rest else (self.first,)


@dataclass(frozen=True)
class HeadPlan:
    conv: Unit | None
    in_ch: int
    norm: str | None
    num_classes: int


def stem_plan(cfg: ArchConfig) -> StemPlan:
    """Every stem reduces 4x: a conv stride 4, or stride 2 then a 3x3/s2 maxpool or a 2x2/s2 conv."""
    s, c, b, act = cfg.stem, cfg.in_chans, cfg.conv_bias, cfg.act
    half = s.width // 2
    if s.type == "patchify":
        return StemPlan((Unit(c, s.width, 4, 4, bias=b, norm=s.norm),), maxpool=False)
    if s.type == "resnet":
        return StemPlan((Unit(c, s.width, 7, 2, bias=b, norm=s.norm, act=act),), maxpool=True)
    if s.type == "deep":
        units = (
            Unit(c, half, 3, 2, bias=b, norm=s.norm, act=act),
            Unit(half, half, 3, 1, bias=b, norm=s.norm, act=act),
            Unit(half, s.width, 3, 1, bias=b, norm=s.norm, act=act),
        )
        return StemPlan(units, maxpool=True)
    # conv2former: the authors' stem has no conv biases and puts the act before the BN.
    units = (
        Unit(c, half, 3, 2, norm=s.norm, act=act, order=CONV_ACT_NORM),
        Unit(half, half, 3, 1, norm=s.norm, act=act, order=CONV_ACT_NORM),
        Unit(half, s.width, 2, 2),
    )
    return StemPlan(units, maxpool=False)


def _spatial_groups(stage: StageConfig, channels: int) -> int:
    return {"dense": 1, "grouped": stage.groups, "depthwise": channels}[stage.conv]


def _conv_units(cfg: ArchConfig, stage: StageConfig, in_ch: int, stride: int) -> tuple[Unit, ...]:
    """Main path of basic/bottleneck blocks: which convs, then where the norms and acts sit.

    norms 'one' keeps the norm after the spatial conv only (roadmap step 10); acts 'one' keeps the act
    before the last conv only (step 9: the GELU between the two 1x1 convs) and drops the act after the add.
    """
    k, inner, out, b = stage.kernel, stage.inner_width, stage.width, cfg.conv_bias
    if stage.block == "basic":
        convs = [(in_ch, inner, k, stride, 1), (inner, out, k, 1, 1)]
        spatial = 0
    elif cfg.dw_position == "middle":
        convs = [(in_ch, inner, 1, 1, 1), (inner, inner, k, stride, _spatial_groups(stage, inner)), (inner, out, 1, 1, 1)]
        spatial = 1
    else:
        convs = [(in_ch, in_ch, k, stride, _spatial_groups(stage, in_ch)), (in_ch, inner, 1, 1, 1), (inner, out, 1, 1, 1)]
        spatial = 0
    last = len(convs) - 1
    units = []
    for i, (ci, co, kk, st, g) in enumerate(convs):
        has_norm = cfg.norms_per_block == "all" or i == spatial
        has_act = i < last if cfg.acts_per_block == "all" else i == last - 1
        units.append(Unit(ci, co, kk, st, g, b, cfg.norm if has_norm else None, cfg.act if has_act else None))
    return tuple(units)


def _convmod_plan(cfg: ArchConfig, stage: StageConfig, in_ch: int, stride: int) -> ConvModPlan:
    out, inner, b, act = stage.width, stage.inner_width, cfg.conv_bias, cfg.act
    return ConvModPlan(
        att_in=Unit(in_ch, out, 1, bias=b, act=act),
        att_dw=Unit(out, out, stage.kernel, stride, groups=out, bias=b),
        value=Unit(in_ch, out, 1, stride, bias=b),
        proj=Unit(out, out, 1, bias=b),
        fc1=Unit(out, inner, 1, bias=b, act=act),
        pos=Unit(inner, inner, 3, groups=inner, bias=b, act=act),
        fc2=Unit(inner, out, 1, bias=b),
    )


def block_plan(cfg: ArchConfig, stage: StageConfig, in_ch: int, stride: int) -> BlockPlan:
    """One block; a projection shortcut (1x1 conv + norm) wherever shape changes."""
    needs_projection = stride != 1 or in_ch != stage.width
    shortcut = Unit(in_ch, stage.width, 1, stride, bias=cfg.conv_bias, norm=cfg.norm) if needs_projection else None
    is_convmod = stage.block == "convmod"
    return BlockPlan(
        block=stage.block,
        in_ch=in_ch,
        out_ch=stage.width,
        stride=stride,
        units=() if is_convmod else _conv_units(cfg, stage, in_ch, stride),
        shortcut=shortcut,
        residual_act=cfg.act if cfg.acts_per_block == "all" and not is_convmod else None,
        attention=stage.attention,
        layer_scale_init=cfg.layer_scale_init,
        norm=cfg.norm,
        convmod=_convmod_plan(cfg, stage, in_ch, stride) if is_convmod else None,
    )


def stage_plans(cfg: ArchConfig) -> tuple[StagePlan, ...]:
    """Stage 0 keeps the stem's stride 4; each later stage halves the resolution once."""
    plans, previous, reduction = [], cfg.stem.width, 4
    for i, (stage, first_in) in enumerate(zip(cfg.stages, cfg.first_block_inputs())):
        stride = 1 if i == 0 else 2
        reduction *= stride
        downsample = None
        if cfg.downsample == "separate" and stride == 2:
            downsample = Unit(previous, stage.width, 2, 2, bias=cfg.conv_bias, norm=cfg.norm, order=NORM_CONV)
            stride = 1
        rest = block_plan(cfg, stage, stage.width, 1) if stage.depth > 1 else None
        plans.append(StagePlan(downsample, block_plan(cfg, stage, first_in, stride), rest, stage.depth - 1, reduction))
        previous = stage.width
    return tuple(plans)


def head_plan(cfg: ArchConfig) -> HeadPlan:
    """Optional pre-pool 1x1 conv + act + norm (Conv2Former), pooling, optional pooled norm (ConvNeXt), fc."""
    last = cfg.stages[-1].width
    conv = None
    if cfg.head_width:
        conv = Unit(last, cfg.head_width, 1, bias=cfg.conv_bias, norm=cfg.norm, act=cfg.act, order=CONV_ACT_NORM)
    width = cfg.head_width or last
    return HeadPlan(conv, width, cfg.norm if cfg.head_norm else None, cfg.num_classes)
