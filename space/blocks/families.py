"""Block families as compositions of the shared parts: ResNet basic/bottleneck (incl. ResNeXt and every
ConvNeXt roadmap step), the Conv2Former ConvMod block and the DenseNet layer."""

from __future__ import annotations

import dataclasses

import torch
from timm.layers import DropPath, LayerScale2d
from torch import Tensor, nn

from space.blocks.parts import (
    ChannelsLastPointwise,
    Residual,
    channels_last_eligible,
    conv_layer,
    make_act,
    make_attention,
    make_norm,
    make_norm_act,
    norm_movable,
    unit_layers,
)
from space.layout import BlockPlan, ConvModPlan, Unit


class ConvModulation(nn.Module):
    """Conv2Former's convolutional modulation: proj(dw(act(1x1 x)) * 1x1 x) on the pre-normed input."""

    def __init__(self, plan: ConvModPlan, norm: str) -> None:
        super().__init__()
        self.norm = make_norm(norm, plan.att_in.in_ch)
        self.att = nn.Sequential(unit_layers(plan.att_in), unit_layers(plan.att_dw))
        self.value = unit_layers(plan.value)
        self.proj = unit_layers(plan.proj)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        return self.proj(self.att(x) * self.value(x))


class ConvMlp(nn.Module):
    """Conv2Former's MLP: pre-norm, 1x1 up, act, a residual depthwise 3x3 (+act), 1x1 down."""

    def __init__(self, plan: ConvModPlan, norm: str) -> None:
        super().__init__()
        self.norm = make_norm(norm, plan.fc1.in_ch)
        self.fc1 = unit_layers(plan.fc1)
        self.pos = unit_layers(plan.pos)
        self.fc2 = unit_layers(plan.fc2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(self.norm(x))
        return self.fc2(x + self.pos(x))


class DenseLayer(nn.Module):
    """One DenseNet-BC layer: its input, with the `growth` new channels it computes concatenated after it.

    The parts and their names are timm's DenseLayer's (norm1, conv1, norm2, conv2; the norms are timm's norm-act layers,
    BatchNormAct2d for DenseNet), so a timm DenseNet's weights load by name. timm's class itself is not reused: it fixes
    a bias-free 3x3 conv and one norm layer for both convs, and returns the new channels alone for its DenseBlock to
    concatenate, where a stage here is a sequence of blocks (each layer its own block, so stochastic depth, layer scale,
    gradient checkpointing and layer-wise LR decay go layer by layer as in every other family).
    """

    def __init__(self, plan: BlockPlan, drop_path: float) -> None:
        super().__init__()
        bottleneck, spatial = plan.units
        self.norm1 = make_norm_act(bottleneck.norm, bottleneck.act, bottleneck.in_ch)
        self.conv1 = conv_layer(bottleneck)
        self.norm2 = make_norm_act(spatial.norm, spatial.act, spatial.in_ch)
        self.conv2 = conv_layer(spatial)
        self.layer_scale = LayerScale2d(spatial.out_ch, plan.layer_scale_init) if plan.layer_scale_init else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """cat(x, new): stochastic depth drops a sample's new channels (zeros), as it drops a residual branch."""
        new = self.conv2(self.norm2(self.conv1(self.norm1(x))))
        return torch.cat([x, self.drop_path(self.layer_scale(new))], 1)


def _conv_path(units: list[Unit]) -> list[nn.Module]:
    """The units in order; a trailing pair of 1x1 convs (inverted bottleneck) runs channels-last, taking along
    the LayerNorm and act of the conv before it (exactly timm's ConvNeXt block)."""
    if len(units) < 2 or not all(channels_last_eligible(u) for u in units[-2:]):
        return [unit_layers(u) for u in units]
    before, pointwise = units[:-2], units[-2:]
    lead_norm = lead_act = None
    if before and norm_movable(before[-1]):
        lead_norm, lead_act = before[-1].norm, before[-1].act
        before[-1] = dataclasses.replace(before[-1], norm=None, act=None)
    return [unit_layers(u) for u in before] + [ChannelsLastPointwise(pointwise, lead_norm, lead_act)]


def build_block(plan: BlockPlan, drop_path: float, zero_init_last: bool = True) -> nn.Module:
    """One block from its plan; attention (SE/CBAM) sits at the end of the last residual branch.

    `zero_init_last` (timm's ResNet keyword) zeroes the branch's last BatchNorm of blocks without layer scale.
    """
    if plan.block == "dense":
        return DenseLayer(plan, drop_path)
    attention = make_attention(plan.attention, plan.out_ch)
    if plan.convmod is not None:
        return nn.Sequential(
            Residual(ConvModulation(plan.convmod, plan.norm), plan.out_ch, plan.shortcut, plan.layer_scale_init, drop_path),
            Residual(nn.Sequential(ConvMlp(plan.convmod, plan.norm), attention), plan.out_ch, None, plan.layer_scale_init, drop_path),
        )
    body = nn.Sequential(*_conv_path(list(plan.units)), attention)
    last = body[len(body) - 2]
    if zero_init_last and not plan.layer_scale_init and isinstance(getattr(last, "norm", None), nn.BatchNorm2d):
        nn.init.zeros_(last.norm.weight)  # timm's zero_init_last: each ResNet block starts as identity
    residual = Residual(body, plan.out_ch, plan.shortcut, plan.layer_scale_init, drop_path)
    return nn.Sequential(residual, make_act(plan.residual_act)) if plan.residual_act else residual
