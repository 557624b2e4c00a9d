"""Exact FLOPs and parameters of an ArchConfig, analytically, without torch.

The convention is fvcore's `FlopCountAnalysis` in eval mode at batch 1 (the one the ConvNeXt and
Conv2Former papers report): one multiply-add is one FLOP; convs and linears count
out * in/groups * k*k per output pixel (no bias); batch norm 2 per element; layer/group norm 5 per
element; adaptive average pooling 1 per input element; activations, element-wise products, residual
adds, concatenations, max and average pooling, channel shuffles, `sum`, `mean` and softmax count nothing. fvcore has no
count for torchvision's deform_conv2d: `space.verify` registers one (the conv's multiply-adds plus 4 per
bilinearly sampled input value), and the deformable unit here counts the same. Written by hand because
fvcore needs a built model and a traced forward (~0.2 s per point), far too slow to screen thousands of
sampled points.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from space.config import ArchConfig
from space.errors import ConvspaceError, require
from space.layout import DEFORMABLE, NORM_FIRST, SEPARABLE, SPLAT, BlockPlan, NormAct, Unit, head_plan, stage_plans, stem_plan
from space.widths import attention_channels, splat_attention_channels

PAPER_RESOLUTION = 224  # the papers' convention: FLOPs counted on one 224x224 image ...
PAPER_CLASSES = 1000  # ... by a network with ImageNet-1k's head (the default wherever a cost or a budget is counted)
BILINEAR_FLOPS = 4  # one sampled value is the weighted sum of 4 neighbours (fvcore's grid_sampler count)

_NORM_FLOPS_PER_ELEMENT = {"bn": 2, "ln": 5, "gn": 5}


@dataclass(frozen=True)
class Cost:
    """FLOPs (fvcore's multiply-adds) and parameter count of one network at one resolution."""

    flops: int
    params: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.params + other.params)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


ZERO = Cost(0, 0)


def conv_side(size: int, unit: Unit) -> int:
    """Output side length of a unit's conv (a strided splat's average pool gives the same)."""
    return (size + 2 * unit.padding - unit.dilation * (unit.kernel - 1) - 1) // unit.stride + 1


def conv_out(size: int, unit: Unit) -> int:
    """Output side length of a unit: its conv's, then its average pool's (kernel = stride = pool, no padding)."""
    return conv_side(size, unit) // unit.pool


def norm_cost(kind: str, channels: int, pixels: int) -> Cost:
    """A norm over `channels` at `pixels` positions (all our norms are affine: 2 params per channel)."""
    return Cost(_NORM_FLOPS_PER_ELEMENT[kind] * channels * pixels, 2 * channels)


def conv_cost(in_ch: int, out_ch: int, taps: int, groups: int, pixels: int, bias: bool) -> Cost:
    """A conv with `taps` kernel positions producing `pixels` output positions."""
    weights = out_ch * (in_ch // groups) * taps
    return Cost(weights * pixels, weights + (out_ch if bias else 0))


def splat_cost(unit: Unit, size: int) -> Cost:
    """timm's SplitAttn: its conv (stride 1 when it strides: the pool after it strides) and norm over the radix splits,
    then the attention MLP on the pooled sum (two biased 1x1 convs grouped by `groups`, a norm between them)."""
    mid, attn = unit.out_ch * unit.radix, splat_attention_channels(unit.in_ch, unit.radix)
    cost = conv_cost(unit.in_ch, mid, unit.kernel**2, unit.groups * unit.radix, size * size, unit.bias)
    cost += norm_cost(unit.norm, mid, size * size)
    cost += conv_cost(unit.out_ch, attn, 1, unit.groups, 1, True) + norm_cost(unit.norm, attn, 1)
    return cost + conv_cost(attn, mid, 1, unit.groups, 1, True)


def unit_cost(unit: Unit, size: int) -> tuple[Cost, int]:
    """Cost of one conv unit on a size x size input, and its output size (after its pool, which counts nothing)."""
    out = conv_side(size, unit)
    taps = unit.kernel**2
    if unit.kind == SPLAT:
        return splat_cost(unit, size), out  # its norm is inside
    if unit.kind == SEPARABLE:  # k x 1 on size columns, then 1 x k
        cost = conv_cost(unit.in_ch, unit.out_ch, unit.kernel, unit.groups, out * size, unit.bias)
        cost += conv_cost(unit.out_ch, unit.out_ch, unit.kernel, unit.groups, out * out, unit.bias)
    elif unit.kind == DEFORMABLE:  # the offset conv (2 offsets per tap), the conv, the bilinear sampling of its input
        cost = conv_cost(unit.in_ch, 2 * taps, taps, 1, out * out, True)
        cost += conv_cost(unit.in_ch, unit.out_ch, taps, unit.groups, out * out, unit.bias)
        cost += Cost(BILINEAR_FLOPS * unit.in_ch * taps * out * out, 0)
    else:
        cost = conv_cost(unit.in_ch, unit.out_ch, taps, unit.groups, out * out, unit.bias)
    if unit.norm:
        cost += norm_cost(unit.norm, unit.norm_channels, (size if unit.order in NORM_FIRST else out) ** 2)
    return cost, out // unit.pool


def _units_cost(units: tuple[Unit, ...], size: int) -> tuple[Cost, int]:
    total = ZERO
    for unit in units:
        cost, size = unit_cost(unit, size)
        total += cost
    return total, size


def block_units(plan: BlockPlan, size: int) -> tuple[list[tuple[Unit, int]], int]:
    """Every conv unit of a block's main path with the side of its input map, and the block's output side."""
    if plan.convmod is None:
        placed = []
        for unit in plan.units:
            placed.append((unit, size))
            size = conv_out(size, unit)
        return placed, size
    m = plan.convmod
    out = conv_out(size, m.att_dw)  # att_in is 1x1: the depthwise conv sees the block's input side
    return [(m.att_in, size), (m.att_dw, size), (m.value, size), (m.proj, out), (m.fc1, out), (m.pos, out), (m.fc2, out)], out


def attention_cost(kind: str, channels: int, size: int) -> Cost:
    """timm SqueezeExcite (biased MLP, applied once) or CbamModule (bias-free MLP applied to avg and max, 7x7 conv + BN)."""
    if kind == "none":
        return ZERO
    rd = attention_channels(kind, channels)
    if kind == "se":
        return Cost(2 * channels * rd, 2 * channels * rd + rd + channels)
    spatial = Cost(2 * 49 * size * size, 2 * 49) + norm_cost("bn", 1, size * size)
    return Cost(4 * channels * rd, 2 * channels * rd) + spatial


def block_cost(plan: BlockPlan, size: int) -> tuple[Cost, int]:
    """One residual block, walking the same plan the builder instantiates."""
    placed, out = block_units(plan, size)
    total = ZERO
    for unit, at in placed:
        total += unit_cost(unit, at)[0]
    scaled = 1
    if plan.convmod is not None:  # the pre-norms of its two residual branches, and a layer scale on each
        total += norm_cost(plan.norm, plan.in_ch, size * size) + norm_cost(plan.norm, plan.out_ch, out * out)
        scaled = 2
    if plan.shortcut:
        total += unit_cost(plan.shortcut, size)[0]
    total += attention_cost(plan.attention, plan.out_ch, out)
    if plan.layer_scale_init:
        total += Cost(0, scaled * plan.branch_ch)
    return total, out


def tail_cost(tail: NormAct | None, size: int) -> Cost:
    """The norm-act that ends a pre-activation network (the act counts nothing)."""
    return norm_cost(tail.norm, tail.channels, size * size) if tail else ZERO


MAX_RESOLUTION = 4096  # beyond it a single image's activations no longer fit any machine's memory


def check_resolution(name: str, resolution: int) -> None:
    """Every network reduces its input 32x (stem and three downsamplings), so smaller inputs cannot pass."""
    require(resolution >= 32, name, "must be >= 32 (the network reduces 32x)", resolution)
    require(resolution <= MAX_RESOLUTION, name, f"must be <= {MAX_RESOLUTION}", resolution)


def check_fits(cfg: ArchConfig, resolution: int) -> None:
    """Refuse a network whose dilated convs would pad past their maps at `resolution` (the proxy's, say).

    There every tap of a dilated conv but the centre falls in the padding: the conv degenerates to a 1x1
    one. The cost stays well defined (fvcore counts every tap), so `arch_cost` does not call this; whatever
    trains or shows a network at one resolution should.
    """
    check_resolution("resolution", resolution)
    stem = stem_plan(cfg)
    size = _units_cost(stem.units, resolution)[1]
    size = (size - 1) // 2 + 1 if stem.maxpool else size
    for i, (stage, plan) in enumerate(zip(cfg.stages, stage_plans(cfg))):
        size = conv_out(size, plan.downsample) if plan.downsample else size
        for block, _ in plan.runs:  # each distinct block once: the first (in the stride's place), then the repeated one
            placed, out = block_units(block, size)
            for unit, at in placed:
                if unit.dilation > 1 and unit.padding >= at:
                    j = i if unit.dilation == stage.dilation else i - 1
                    raise ConvspaceError(
                        f"stages[{j}].dilation: {unit.dilation} makes a {unit.kernel}x{unit.kernel} conv of stages[{i}] pad "
                        f"{unit.padding} px around its {at}x{at} map at resolution {resolution} (padding must stay below the "
                        f"map side: lower the dilation or stages[{i}].kernel, or raise the resolution)"
                    )
            size = out


def arch_cost(cfg: ArchConfig, resolution: int = PAPER_RESOLUTION) -> Cost:
    """FLOPs and params of the whole network on a resolution x resolution input (fvcore's count, exactly)."""
    check_resolution("resolution", resolution)
    stem = stem_plan(cfg)
    total, size = _units_cost(stem.units, resolution)
    if stem.maxpool:
        size = (size - 1) // 2 + 1  # 3x3/s2 maxpool with padding 1
    for stage in stage_plans(cfg):
        if stage.downsample:
            cost, size = unit_cost(stage.downsample, size)
            total += cost
        for block, count in stage.runs:  # identical blocks keep the resolution after the first: count one, multiply
            cost, size = block_cost(block, size)
            total += Cost(cost.flops * count, cost.params * count)
        total += tail_cost(stage.tail, size)
    head = head_plan(cfg)
    if head.conv:
        cost, size = unit_cost(head.conv, size)
        total += cost
    total += Cost(head.in_ch * size * size, 0)  # adaptive average pooling
    if head.norm:
        total += norm_cost(head.norm, head.in_ch, 1)
    if head.num_classes:
        total += Cost(head.in_ch * head.num_classes, (head.in_ch + 1) * head.num_classes)
    return total


MAX_FLOPS = 1e15  # a PFLOP per image: far beyond any network, below where an int of it stops meaning anything
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(?:flops?)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_flops(text: str | float | int) -> int:
    """Read a FLOPs budget: '4.5GFLOPs', '4.5G', '450MFLOPs', '4.5e9' (fvcore multiply-adds)."""
    match = _BUDGET.match(str(text))
    if not match:
        raise ConvspaceError(f"budget: cannot read {text!r}; use e.g. 4.5GFLOPs, 4.5G, 450MFLOPs or 4.5e9")
    value = float(match.group(1)) * _SCALE[match.group(2).lower()]
    if not value < MAX_FLOPS:  # also inf (1e400 reads as inf)
        raise ConvspaceError(f"budget: {text!r} is beyond any network (at most {MAX_FLOPS / 1e12:g} TFLOPs)")
    flops = int(round(value))
    if flops <= 0:
        raise ConvspaceError(f"budget: must be above zero, got {text!r}")
    if not match.group(2) and flops < 1_000_000:  # no network costs under a MFLOP: the unit was left out
        raise ConvspaceError(f"budget: {text!r} has no unit and would mean {flops} FLOPs; did you mean {text}GFLOPs (or {text}MFLOPs)?")
    return flops
