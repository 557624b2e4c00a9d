"""ArchConfig -> torch.nn.Module with timm's model API (forward_features/forward_head/feature_info/...)."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from timm.layers import ClassifierHead, NormMlpClassifierHead, trunc_normal_
from torch import Tensor, nn

from space.blocks.families import build_block
from space.blocks.parts import norm_layer, unit_layers
from space.config import ArchConfig
from space.layout import head_plan, stage_plans, stem_plan


class ConvSpaceNet(nn.Module):
    """One point of the design space as a timm-style classifier (and multi-scale backbone via feature_info)."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.in_chans = config.in_chans
        self.drop_path_rate = config.drop_path_rate

        stem = stem_plan(config)
        self.stem = nn.Sequential(*[unit_layers(u) for u in stem.units])
        if stem.maxpool:
            self.stem.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))

        plans = stage_plans(config)
        rates = iter(_drop_path_rates(config.drop_path_rate, sum(len(p.blocks) for p in plans)))
        stages, self.feature_info = [], []
        for i, plan in enumerate(plans):
            stage = OrderedDict(
                downsample=unit_layers(plan.downsample) if plan.downsample else nn.Identity(),
                blocks=nn.Sequential(*[build_block(b, next(rates)) for b in plan.blocks]),
            )
            stages.append(nn.Sequential(stage))
            self.feature_info.append(dict(num_chs=config.stages[i].width, reduction=plan.reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        head = head_plan(config)
        self.final_conv = unit_layers(head.conv) if head.conv else nn.Identity()
        self.num_features = self.head_hidden_size = head.in_ch
        if head.norm:
            self.head = NormMlpClassifierHead(head.in_ch, head.num_classes, norm_layer=norm_layer(head.norm, head.in_ch))
        else:
            self.head = ClassifierHead(head.in_ch, head.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """ConvNeXt-style nets (biased convs): trunc normal std .02; ResNet-style: Kaiming fan_out (as timm)."""
        truncated = self.config.conv_bias
        classifier = self.head.fc
        for m in self.modules():
            # Linear layers inside blocks are 1x1 convs run channels-last: they get the convs' init
            if isinstance(m, (nn.Conv2d, nn.Linear)) and (truncated or m is not classifier):
                if truncated:
                    trunc_normal_(m.weight, std=0.02)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final_conv(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)


def _drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to `rate` over the blocks (timm/ConvNeXt convention)."""
    return [rate * i / (blocks - 1) if blocks > 1 else 0.0 for i in range(blocks)]


def build_network(config: ArchConfig, **overrides: Any) -> ConvSpaceNet:
    """Build a network; `num_classes`, `in_chans`, `drop_path_rate` overrides follow timm.create_model."""
    known = {"num_classes", "in_chans", "drop_path_rate"}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unexpected model arguments: {sorted(unknown)}")
    return ConvSpaceNet(dataclasses.replace(config, **overrides) if overrides else config)
