"""Exact FLOPs and parameters of an ArchConfig, analytically, without torch.

The convention is fvcore's `FlopCountAnalysis` in eval mode at batch 1 (the one the ConvNeXt and
Conv2Former papers report): one multiply-add is one FLOP; convs and linears count
out * in/groups * k*k per output pixel (no bias); batch norm 2 per element; layer/group norm 5 per
element; adaptive average pooling 1 per input element; activations, element-wise products, residual
adds, max pooling and `mean` count nothing. Written by hand because fvcore needs a built model and a
traced forward (~0.2 s per point), far too slow to screen thousands of sampled points.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from space.config import ArchConfig
from space.errors import ConvspaceError, require
from space.layout import NORM_CONV, BlockPlan, Unit, head_plan, stage_plans, stem_plan

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


def make_divisible(value: float, divisor: int) -> int:
    """timm's `make_divisible(v, divisor, round_limit=0.)`, used for SE/CBAM widths (pure copy: no torch here)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def attention_channels(kind: str, channels: int) -> int:
    """Reduced width of the attention MLP: timm's SE (ratio 1/16, divisor 8) and CBAM (ratio 1/16, divisor 1)."""
    return make_divisible(channels / 16, 8 if kind == "se" else 1)


def conv_out(size: int, unit: Unit) -> int:
    """Output side length of a unit's conv."""
    return (size + 2 * unit.padding - unit.kernel) // unit.stride + 1


def norm_cost(kind: str, channels: int, pixels: int) -> Cost:
    """A norm over `channels` at `pixels` positions (all our norms are affine: 2 params per channel)."""
    return Cost(_NORM_FLOPS_PER_ELEMENT[kind] * channels * pixels, 2 * channels)


def unit_cost(unit: Unit, size: int) -> tuple[Cost, int]:
    """Cost of one conv unit on a size x size input, and its output size."""
    out = conv_out(size, unit)
    weights = unit.out_ch * (unit.in_ch // unit.groups) * unit.kernel**2
    cost = Cost(weights * out * out, weights + (unit.out_ch if unit.bias else 0))
    if unit.norm:
        cost += norm_cost(unit.norm, unit.norm_channels, (size if unit.order == NORM_CONV else out) ** 2)
    return cost, out


def _units_cost(units: tuple[Unit, ...], size: int) -> tuple[Cost, int]:
    total = ZERO
    for unit in units:
        cost, size = unit_cost(unit, size)
        total += cost
    return total, size


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
    if plan.convmod is None:
        total, out = _units_cost(plan.units, size)
        scaled = 1
    else:
        m = plan.convmod
        total = norm_cost(plan.norm, plan.in_ch, size * size)
        att, out = _units_cost((m.att_in, m.att_dw), size)
        value, _ = unit_cost(m.value, size)
        mlp, _ = _units_cost((m.proj, m.fc1, m.pos, m.fc2), out)
        total += att + value + mlp + norm_cost(plan.norm, plan.out_ch, out * out)
        scaled = 2
    if plan.shortcut:
        total += unit_cost(plan.shortcut, size)[0]
    total += attention_cost(plan.attention, plan.out_ch, out)
    if plan.layer_scale_init:
        total += Cost(0, scaled * plan.out_ch)
    return total, out


def check_resolution(name: str, resolution: int) -> None:
    """Every network reduces its input 32x (stem and three downsamplings), so smaller inputs cannot pass."""
    require(resolution >= 32, name, "must be >= 32 (the network reduces 32x)", resolution)


def arch_cost(cfg: ArchConfig, resolution: int = 224) -> Cost:
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
        cost, size = block_cost(stage.first, size)
        total += cost
        if stage.rest:  # identical blocks at an unchanged resolution: count one, multiply
            cost, _ = block_cost(stage.rest, size)
            total += Cost(cost.flops * stage.repeats, cost.params * stage.repeats)
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


_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)(?:flops?)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_flops(text: str | float | int) -> int:
    """Read a FLOPs budget: '4.5GFLOPs', '4.5G', '450MFLOPs', '4.5e9' (fvcore multiply-adds)."""
    match = _BUDGET.match(str(text))
    if not match:
        raise ConvspaceError(f"budget: cannot read {text!r}; use e.g. 4.5GFLOPs, 4.5G, 450MFLOPs or 4.5e9")
    flops = int(round(float(match.group(1)) * _SCALE[match.group(2).lower()]))
    if flops <= 0:
        raise ConvspaceError(f"budget: must be above zero, got {text!r}")
    return flops
