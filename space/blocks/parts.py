"""The pieces every block family shares: conv units, norms, acts, attention, the residual wrapper."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from timm.layers import DropPath, GroupNorm, LayerNorm, LayerNorm2d, LayerScale2d, SEModule, create_act_layer, create_conv2d
from timm.layers.cbam import CbamModule
from torch import Tensor, nn

from space.cost import attention_channels
from space.layout import CONV_ACT_NORM, CONV_NORM_ACT, NORM_CONV, Unit


def norm_layer(kind: str, channels: int) -> Callable[..., nn.Module]:
    """timm norm class for 'bn', 'ln' (LayerNorm2d, eps 1e-6 as ConvNeXt) or 'gn'.

    GN takes Wu & He's 32 groups where the width allows, fewer otherwise, and always >= 2 channels per group
    (a 1-channel group on the 1x1 maps of a small proxy input has nothing to normalise).

    Returned as a class (or keyword-only partial) so timm heads can pass their device/dtype keywords.
    """
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "ln":
        return LayerNorm2d
    return partial(GroupNorm, num_groups=math.gcd(32, max(1, channels // 2)))


def make_norm(kind: str, channels: int) -> nn.Module:
    """A norm layer over `channels`."""
    return norm_layer(kind, channels)(channels)


def make_act(name: str) -> nn.Module:
    """timm's activation registry ('relu', 'gelu', 'silu')."""
    return create_act_layer(name, inplace=True)


def unit_layers(unit: Unit) -> nn.Sequential:
    """One conv unit: conv/norm/act children in the unit's order (names stable for state dicts)."""
    conv = create_conv2d(
        unit.in_ch, unit.out_ch, unit.kernel, stride=unit.stride, padding=unit.padding, groups=unit.groups, bias=unit.bias
    )
    norm = [("norm", make_norm(unit.norm, unit.norm_channels))] if unit.norm else []
    act = [("act", make_act(unit.act))] if unit.act else []
    if unit.order == NORM_CONV:
        layers = norm + [("conv", conv)] + act
    elif unit.order == CONV_ACT_NORM:
        layers = [("conv", conv)] + act + norm
    else:
        layers = [("conv", conv)] + norm + act
    return nn.Sequential(OrderedDict(layers))


def make_attention(kind: str, channels: int) -> nn.Module:
    """timm's SE or CBAM with the reduced width the cost model counts, or nothing."""
    if kind == "none":
        return nn.Identity()
    module = SEModule if kind == "se" else CbamModule
    return module(channels, rd_channels=attention_channels(kind, channels))


def channels_last_eligible(unit: Unit) -> bool:
    """A 1x1, stride-1, dense conv with no norm or a LayerNorm can run as a Linear layer on NHWC."""
    return unit.kernel == 1 and unit.stride == 1 and unit.groups == 1 and unit.norm in (None, "ln") and unit.order == CONV_NORM_ACT


class ChannelsLastPointwise(nn.Module):
    """A run of 1x1 convs as Linear layers on NHWC, as timm's ConvNeXt runs its MLP.

    Same parameters and fvcore FLOPs as the NCHW convs, but no LayerNorm2d permutes and better GEMMs: this is
    what keeps our ConvNeXt as fast as timm's. `lead_norm`/`lead_act` are the preceding conv's norm and act.
    """

    def __init__(self, units: list[Unit], lead_norm: str | None = None, lead_act: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if lead_norm:
            layers.append(LayerNorm(units[0].in_ch))
        if lead_act:
            layers.append(make_act(lead_act))
        for unit in units:
            layers.append(nn.Linear(unit.in_ch, unit.out_ch, bias=unit.bias))
            if unit.norm:
                layers.append(LayerNorm(unit.out_ch))
            if unit.act:
                layers.append(make_act(unit.act))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Residual(nn.Module):
    """`shortcut(x) + drop_path(layer_scale(branch(x)))`: the skeleton of every block family."""

    def __init__(
        self, branch: nn.Module, channels: int, shortcut: Unit | None, layer_scale_init: float, drop_path: float
    ) -> None:
        super().__init__()
        self.branch = branch
        self.layer_scale = LayerScale2d(channels, layer_scale_init) if layer_scale_init else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.shortcut = unit_layers(shortcut) if shortcut else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.drop_path(self.layer_scale(self.branch(x)))
