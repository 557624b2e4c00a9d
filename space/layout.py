"""The layer-by-layer plan of an ArchConfig, as plain data.

Both the torch builder (`space.network`) and the analytic cost model (`space.cost`) walk this one plan,
so what is built and what is counted cannot drift apart. Every conv of the network is a `Unit`
(conv + optional norm + optional act); blocks list their units and how they are wired.
"""

from __future__ import annotations

from dataclasses import dataclass

from space.config import ArchConfig, StageConfig
from space.widths import transition_width

CONV_NORM_ACT = "conv-norm-act"  # ResNet/ConvNeXt order
CONV_ACT_NORM = "conv-act-norm"  # Conv2Former stem and head
NORM_CONV = "norm-conv"  # separate downsampling layer (ConvNeXt/Swin)
NORM_ACT_CONV = "norm-act-conv"  # pre-activation: DenseNet's layers and transitions
NORM_FIRST = (NORM_CONV, NORM_ACT_CONV)  # the orders whose norm sees the conv's input

# How a unit convolves: a plain conv (dense, grouped, depthwise, shuffle) or one of the stage convs built otherwise.
PLAIN, SEPARABLE, SPLAT, DEFORMABLE = "conv", "separable", "splat", "deformable"
_KINDS = {"separable": SEPARABLE, "splat": SPLAT, "deformable": DEFORMABLE}


@dataclass(frozen=True)
class Unit:
    """One conv with its optional norm and activation, in a fixed order.

    `kind` SEPARABLE: a k x 1 conv striding rows, then a 1 x k conv striding columns (no row or column is
    skipped), both with `groups`. SPLAT: timm's SplitAttn over `radix` splits, which holds the unit's norm
    and act; when it strides, its conv runs at stride 1 and a 3x3 average pool strides after it (ResNeSt's
    avd). DEFORMABLE: torchvision's DeformConv2d fed by a biased offset conv of the same geometry.
    `shuffle`: a channel shuffle in `groups` groups after the unit (ShuffleNet). `pool` > 1: a pool x pool average
    pool of stride `pool` after the unit (DenseNet's transition).
    """

    in_ch: int
    out_ch: int
    kernel: int
    stride: int = 1
    groups: int = 1
    bias: bool = False
    norm: str | None = None
    act: str | None = None
    order: str = CONV_NORM_ACT
    dilation: int = 1
    kind: str = PLAIN
    radix: int = 1
    shuffle: bool = False
    pool: int = 1

    @property
    def padding(self) -> int:
        """Patch convs (kernel == stride) tile without padding; the others keep 'same' padding."""
        return 0 if self.kernel == self.stride else self.dilation * (self.kernel // 2)

    @property
    def norm_channels(self) -> int:
        return self.in_ch if self.order in NORM_FIRST else self.out_ch


@dataclass(frozen=True)
class NormAct:
    """A norm and its activation on their own: what ends a pre-activation network (DenseNet's norm5)."""

    channels: int
    norm: str
    act: str


@dataclass(frozen=True)
class StemPlan:
    units: tuple[Unit, ...]
    maxpool: bool


@dataclass(frozen=True)
class BlockPlan:
    """One block. `units` is the main path of basic/bottleneck blocks and of a dense layer (whose output, `growth`
    channels, is concatenated to its input: `out_ch` = `in_ch` + growth); convmod uses `convmod`."""

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

    @property
    def branch_ch(self) -> int:
        """Width of what the block's branch adds: a dense layer's growth, the block's output otherwise."""
        return self.units[-1].out_ch if self.block == "dense" else self.out_ch


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
    """A stage: its downsampling layer (or DenseNet transition), its blocks as runs of identical ones (a residual
    stage: the first block, which may change width and resolution, then depth - 1 copies of the next; a dense stage:
    each layer on its own, as each sees more channels), and the norm-act that ends a pre-activation network."""

    downsample: Unit | None
    runs: tuple[tuple[BlockPlan, int], ...]
    reduction: int
    tail: NormAct | None = None

    @property
    def blocks(self) -> tuple[BlockPlan, ...]:
        return tuple(block for block, count in self.runs for _ in range(count))


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
    return {"dense": 1, "depthwise": channels}.get(stage.conv, stage.groups)


def _conv_units(cfg: ArchConfig, stage: StageConfig, in_ch: int, stride: int, first_dilation: int) -> tuple[Unit, ...]:
    """Main path of basic/bottleneck blocks: which convs, then where the norms and acts sit.

    norms 'one' keeps the norm after the spatial conv only (roadmap step 10); acts 'one' keeps the act
    before the last conv only (step 9: the GELU between the two 1x1 convs) and drops the act after the add.
    The conv in the stride's place dilates as the previous stage (`first_dilation`), later ones as the stage.
    """
    k, inner, out, b, d = stage.kernel, stage.inner_width, stage.width, cfg.conv_bias, stage.dilation
    pointwise = stage.groups if stage.conv == "shuffle" else 1  # ShuffleNet groups the 1x1 convs too
    if stage.block == "basic":
        convs = [(in_ch, inner, k, stride, 1, first_dilation), (inner, out, k, 1, 1, d)]
        spatial = 0
    elif cfg.dw_position == "middle":
        convs = [(in_ch, inner, 1, 1, pointwise, 1), (inner, inner, k, stride, _spatial_groups(stage, inner), first_dilation),
                 (inner, out, 1, 1, pointwise, 1)]
        spatial = 1
    else:
        convs = [(in_ch, in_ch, k, stride, _spatial_groups(stage, in_ch), first_dilation), (in_ch, inner, 1, 1, pointwise, 1),
                 (inner, out, 1, 1, pointwise, 1)]
        spatial = 0
    last = len(convs) - 1
    units = []
    for i, (ci, co, kk, st, g, dil) in enumerate(convs):
        kind = _KINDS.get(stage.conv, PLAIN) if i == spatial and stage.block == "bottleneck" else PLAIN
        # SplitAttn normalises and activates its splits before it pools them, whatever the block's counts say
        has_norm = cfg.norms_per_block == "all" or i == spatial or kind == SPLAT
        has_act = (i < last if cfg.acts_per_block == "all" else i == last - 1) or kind == SPLAT
        units.append(Unit(ci, co, kk, st, g, b, cfg.norm if has_norm else None, cfg.act if has_act else None, dilation=dil,
                          kind=kind, radix=stage.radix if kind == SPLAT else 1, shuffle=stage.conv == "shuffle" and i < last))
    return tuple(units)


def _convmod_plan(cfg: ArchConfig, stage: StageConfig, in_ch: int, stride: int, first_dilation: int) -> ConvModPlan:
    out, inner, b, act = stage.width, stage.inner_width, cfg.conv_bias, cfg.act
    return ConvModPlan(
        att_in=Unit(in_ch, out, 1, bias=b, act=act),
        att_dw=Unit(out, out, stage.kernel, stride, groups=out, bias=b, dilation=first_dilation),
        value=Unit(in_ch, out, 1, stride, bias=b),
        proj=Unit(out, out, 1, bias=b),
        fc1=Unit(out, inner, 1, bias=b, act=act),
        pos=Unit(inner, inner, 3, groups=inner, bias=b, act=act, dilation=stage.dilation),
        fc2=Unit(inner, out, 1, bias=b),
    )


def dense_layer_plan(cfg: ArchConfig, stage: StageConfig, in_ch: int) -> BlockPlan:
    """One DenseNet-BC layer: norm-act-1x1 conv to the bottleneck, norm-act-k x k conv to `growth`, concatenated.

    norms 'one' keeps the norm before the spatial conv only, acts 'one' the act before the last conv only (both the
    second pre-activation), as the roadmap's steps 9 and 10 keep them in a bottleneck.
    """
    b, inner = cfg.conv_bias, stage.inner_width
    units = (
        Unit(in_ch, inner, 1, bias=b, norm=cfg.norm if cfg.norms_per_block == "all" else None,
             act=cfg.act if cfg.acts_per_block == "all" else None, order=NORM_ACT_CONV),
        Unit(inner, stage.growth, stage.kernel, bias=b, norm=cfg.norm, act=cfg.act, order=NORM_ACT_CONV),
    )
    return BlockPlan(block="dense", in_ch=in_ch, out_ch=in_ch + stage.growth, stride=1, units=units, shortcut=None,
                     residual_act=None, attention="none", layer_scale_init=cfg.layer_scale_init, norm=cfg.norm)


def transition_unit(cfg: ArchConfig, stage: StageConfig, in_ch: int) -> Unit:
    """DenseNet's transition into a later dense stage: norm-act, a 1x1 conv that compresses, a 2x2/s2 average pool."""
    return Unit(in_ch, transition_width(in_ch, stage.compression), 1, bias=cfg.conv_bias, norm=cfg.norm, act=cfg.act,
                order=NORM_ACT_CONV, pool=2)


def block_plan(cfg: ArchConfig, stage: StageConfig, in_ch: int, stride: int, first_dilation: int) -> BlockPlan:
    """One block; a projection shortcut (1x1 conv + norm) wherever shape changes."""
    needs_projection = stride != 1 or in_ch != stage.width
    shortcut = Unit(in_ch, stage.width, 1, stride, bias=cfg.conv_bias, norm=cfg.norm) if needs_projection else None
    is_convmod = stage.block == "convmod"
    return BlockPlan(
        block=stage.block,
        in_ch=in_ch,
        out_ch=stage.width,
        stride=stride,
        units=() if is_convmod else _conv_units(cfg, stage, in_ch, stride, first_dilation),
        shortcut=shortcut,
        residual_act=cfg.act if cfg.acts_per_block == "all" and not is_convmod else None,
        attention=stage.attention,
        layer_scale_init=cfg.layer_scale_init,
        norm=cfg.norm,
        convmod=_convmod_plan(cfg, stage, in_ch, stride, first_dilation) if is_convmod else None,
    )


def stage_plans(cfg: ArchConfig) -> tuple[StagePlan, ...]:
    """Stage 0 keeps the stem's stride 4; each later stage halves the resolution once, unless it dilates instead.
    A dense stage halves it in its transition; a network whose last stage is dense ends in a norm-act (DenseNet's
    norm5), there because it is a stage's output for `features_only`, as timm's DenseNet taps it."""
    plans, previous, reduction, dilation = [], cfg.stem.width, 4, 1
    last = len(cfg.stages) - 1
    for i, (stage, first_in) in enumerate(zip(cfg.stages, cfg.first_block_inputs())):
        stride = 1 if i == 0 or stage.dilation > 1 else 2
        reduction *= stride
        downsample = None
        if stage.block == "dense":
            downsample = transition_unit(cfg, stage, previous) if stride == 2 else None
            runs = tuple((dense_layer_plan(cfg, stage, first_in + j * stage.growth), 1) for j in range(stage.depth))
            tail = NormAct(stage.width, cfg.norm, cfg.act) if i == last else None
            plans.append(StagePlan(downsample, runs, reduction, tail))
            previous, dilation = stage.width, stage.dilation
            continue
        if cfg.downsample == "separate" and stride == 2:
            downsample = Unit(previous, stage.width, 2, 2, bias=cfg.conv_bias, norm=cfg.norm, order=NORM_CONV)
            stride = 1
        runs = ((block_plan(cfg, stage, first_in, stride, dilation), 1),)
        if stage.depth > 1:
            runs += ((block_plan(cfg, stage, stage.width, 1, stage.dilation), stage.depth - 1),)
        plans.append(StagePlan(downsample, runs, reduction))
        previous, dilation = stage.width, stage.dilation
    return tuple(plans)


def head_plan(cfg: ArchConfig) -> HeadPlan:
    """Optional pre-pool 1x1 conv + act + norm (Conv2Former), pooling, optional pooled norm (ConvNeXt), fc."""
    last = cfg.stages[-1].width
    conv = None
    if cfg.head_width:
        conv = Unit(last, cfg.head_width, 1, bias=cfg.conv_bias, norm=cfg.norm, act=cfg.act, order=CONV_ACT_NORM)
    width = cfg.head_width or last
    return HeadPlan(conv, width, cfg.norm if cfg.head_norm else None, cfg.num_classes)
