"""The pieces every block family shares: conv units, norms, acts, attention, the residual wrapper."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from timm.layers import (
    BatchNormAct2d,
    DropPath,
    GroupNorm,
    GroupNormAct,
    LayerNorm,
    LayerNorm2d,
    LayerNormAct2d,
    LayerScale2d,
    SEModule,
    SplitAttn,
    create_act_layer,
    create_conv2d,
    get_act_layer,
    register_notrace_module,
)
from timm.layers.cbam import CbamModule
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from space.layout import CONV_ACT_NORM, CONV_NORM_ACT, DEFORMABLE, NORM_ACT_CONV, NORM_CONV, SEPARABLE, SPLAT, Unit
from space.widths import attention_channels


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
    return partial(GroupNorm, num_groups=gn_groups(channels))


def gn_groups(channels: int) -> int:
    """Wu & He's 32 groups where the width allows, fewer otherwise, always >= 2 channels per group and dividing them
    (one group for an odd width, as a dense stage's can be)."""
    return math.gcd(32, max(1, channels // 2), channels)


def make_norm_act(kind: str | None, act: str | None, channels: int) -> nn.Module:
    """A pre-activation: a norm and its act as one timm norm-act layer (BatchNormAct2d, LayerNormAct2d, GroupNormAct:
    what timm's DenseNet normalises with), a lone act, or nothing. The norms are the ones `norm_layer` gives (LN eps
    1e-6, GN groups by width). A lone act is not in place: its input is also what a dense layer concatenates."""
    if kind is None:
        return create_act_layer(act, inplace=False) if act else nn.Identity()
    options = dict(apply_act=act is not None, act_layer=act or "relu")
    if kind == "bn":
        return BatchNormAct2d(channels, **options)
    if kind == "ln":
        return LayerNormAct2d(channels, eps=1e-6, **options)
    return GroupNormAct(channels, num_groups=gn_groups(channels), **options)


def make_norm(kind: str, channels: int) -> nn.Module:
    """A norm layer over `channels`."""
    return norm_layer(kind, channels)(channels)


def make_act(name: str) -> nn.Module:
    """timm's activation registry ('relu', 'gelu', 'silu')."""
    return create_act_layer(name, inplace=True)


def norm_factory(kind: str) -> Callable[..., nn.Module]:
    """A norm constructor for modules that size several norms themselves (SplitAttn), GN groups chosen per width."""
    return lambda channels, **kwargs: norm_layer(kind, channels)(channels, **kwargs)


@register_notrace_module  # torchvision's deform_conv2d checks shapes in Python: fx must keep it whole (timm's features)
class DeformableConv(nn.Module):
    """torchvision's DeformConv2d with the conv that predicts its offsets (2 per tap) from the same input."""

    def __init__(self, unit: Unit) -> None:
        super().__init__()
        geometry = dict(stride=unit.stride, padding=unit.padding, dilation=unit.dilation)
        self.offset = nn.Conv2d(unit.in_ch, 2 * unit.kernel**2, unit.kernel, **geometry)
        self.conv = DeformConv2d(unit.in_ch, unit.out_ch, unit.kernel, groups=unit.groups, bias=unit.bias, **geometry)
        self.zero_offsets()

    def zero_offsets(self) -> None:
        """Offsets start at zero, so the conv starts as its plain counterpart (Dai et al. 2017)."""
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Sample the input at the predicted offsets, then convolve."""
        return self.conv(x, self.offset(x))


def conv_layer(unit: Unit) -> nn.Module:
    """The unit's convolution, by kind (SplitAttn holds the unit's norm and act)."""
    k, p, d, g, b = unit.kernel, unit.padding, unit.dilation, unit.groups, unit.bias
    if unit.kind == SEPARABLE:
        return nn.Sequential(OrderedDict(
            rows=nn.Conv2d(unit.in_ch, unit.out_ch, (k, 1), (unit.stride, 1), (p, 0), (d, 1), groups=g, bias=b),
            columns=nn.Conv2d(unit.out_ch, unit.out_ch, (1, k), (1, unit.stride), (0, p), (1, d), groups=g, bias=b),
        ))
    if unit.kind == SPLAT:
        return SplitAttn(unit.in_ch, unit.out_ch, k, stride=1, padding=p, dilation=d, groups=g, bias=b, radix=unit.radix,
                         act_layer=get_act_layer(unit.act), norm_layer=norm_factory(unit.norm))
    if unit.kind == DEFORMABLE:
        return DeformableConv(unit)
    return create_conv2d(unit.in_ch, unit.out_ch, k, stride=unit.stride, padding=p, dilation=d, groups=g, bias=b)


def unit_layers(unit: Unit) -> nn.Sequential:
    """One conv unit: conv/norm/act children in the unit's order (names stable for state dicts), then a strided
    splat's average pool, a channel shuffle and an average pool where the unit has them. A pre-activation unit's norm
    and act are one timm norm-act layer named `norm` (a DenseNet transition is then laid out as timm's
    DenseTransition: norm, conv, pool)."""
    conv = [("conv", conv_layer(unit))]
    inside = unit.kind == SPLAT
    if unit.order == NORM_ACT_CONV:
        pre = [("norm" if unit.norm else "act", make_norm_act(unit.norm, unit.act, unit.in_ch))] if unit.norm or unit.act else []
        layers = pre + conv
    else:
        norm = [("norm", make_norm(unit.norm, unit.norm_channels))] if unit.norm and not inside else []
        act = [("act", make_act(unit.act))] if unit.act and not inside else []
        if unit.order == NORM_CONV:
            layers = norm + conv + act
        elif unit.order == CONV_ACT_NORM:
            layers = conv + act + norm
        else:
            layers = conv + norm + act
    if inside and unit.stride > 1:
        layers.append(("pool", nn.AvgPool2d(3, unit.stride, padding=1)))  # ResNeSt's avd: pool after the attention
    if unit.shuffle:
        layers.append(("shuffle", nn.ChannelShuffle(unit.groups)))
    if unit.pool > 1:
        layers.append(("pool", nn.AvgPool2d(unit.pool, unit.pool)))
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


def norm_movable(unit: Unit) -> bool:
    """Whether a unit's trailing LayerNorm and act can move into the channels-last 1x1 convs after it (not out of
    a SplitAttn, which holds them, nor across a channel shuffle)."""
    return unit.norm == "ln" and unit.order == CONV_NORM_ACT and unit.kind != SPLAT and not unit.shuffle


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
