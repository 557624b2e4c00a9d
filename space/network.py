"""ArchConfig -> torch.nn.Module with timm's model API (forward_features/forward_head/feature_info/...)."""

# No `from __future__ import annotations` in this module: torch.fx copies the root module's `forward`
# annotations into the code it generates, and TorchScript cannot resolve a string annotation there
# (fx then TorchScript failed with "Unknown type name '_Tensor_'").

import contextlib
import dataclasses
from typing import Any

import torch
from timm.layers import ClassifierHead, NormMlpClassifierHead, trunc_normal_
from timm.models._features import feature_take_indices
from timm.models._manipulate import MATCH_PREV_GROUP, checkpoint_seq
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from space.blocks.families import build_block
from space.blocks.parts import DeformableConv, make_norm_act, norm_layer, unit_layers
from space.config import ArchConfig
from space.errors import refuse
from space.layout import head_plan, stage_plans, stem_plan

# create_model keywords that change the genome (ArchConfig fields, output_stride: the stages' dilations) and those
# that only set how it is built (what timm's ConvNeXt/ResNet constructors take and that means something here);
# anything else is refused.
GENOME_KEYWORDS = ("num_classes", "in_chans", "drop_path_rate", "output_stride")
BUILD_KEYWORDS = ("global_pool", "drop_rate", "zero_init_last", "device", "dtype")
OUTPUT_STRIDES = (8, 16, 32)


class Stage(nn.Module):
    """One stage: its separate downsampling layer or DenseNet transition (or Identity), then its blocks, checkpointed
    one by one on request, then (the last stage of a DenseNet) its closing norm-act."""

    def __init__(self, downsample: nn.Module, blocks: nn.Sequential, tail: nn.Module) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = downsample
        self.blocks = blocks
        self.tail = tail

    def forward(self, x: Tensor) -> Tensor:
        """Downsample, then the blocks, then the tail."""
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self.tail(checkpoint_seq(self.blocks, x))
        return self.tail(self.blocks(x))


class ConvSpaceNet(nn.Module):
    """One point of the design space as a timm-style classifier (and multi-scale backbone via feature_info)."""

    def __init__(
        self,
        config: ArchConfig,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        zero_init_last: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.in_chans = config.in_chans
        self.drop_path_rate = config.drop_path_rate
        self.drop_rate = drop_rate
        # Built under the device context so that device='meta' allocates nothing (as timm's device= keyword)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self._build(config, global_pool, drop_rate, zero_init_last)
        if dtype is not None:
            self.to(dtype=dtype)

    def _build(self, config: ArchConfig, global_pool: str, drop_rate: float, zero_init_last: bool) -> None:
        stem = stem_plan(config)
        self.stem = nn.Sequential(*[unit_layers(u) for u in stem.units])
        if stem.maxpool:
            self.stem.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))

        plans = stage_plans(config)
        rates = iter(_drop_path_rates(config.drop_path_rate, sum(len(p.blocks) for p in plans)))
        stages, self.feature_info = [], []
        for i, plan in enumerate(plans):
            downsample = unit_layers(plan.downsample) if plan.downsample else nn.Identity()
            blocks = nn.Sequential(*[build_block(b, next(rates), zero_init_last) for b in plan.blocks])
            tail = make_norm_act(plan.tail.norm, plan.tail.act, plan.tail.channels) if plan.tail else nn.Identity()
            stages.append(Stage(downsample, blocks, tail))
            self.feature_info.append(dict(num_chs=config.stages[i].width, reduction=plan.reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        head = head_plan(config)
        self.final_conv = unit_layers(head.conv) if head.conv else nn.Identity()
        self.num_features = head.in_ch
        if head.norm:
            norm = norm_layer(head.norm, head.in_ch)
            self.head = NormMlpClassifierHead(head.in_ch, head.num_classes, pool_type=global_pool, drop_rate=drop_rate, norm_layer=norm)
        else:
            self.head = ClassifierHead(head.in_ch, head.num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.head_hidden_size = self.head.num_features
        self._init_weights()

    def _init_weights(self) -> None:
        """ConvNeXt-style nets (biased convs): trunc normal std .02; ResNet-style: Kaiming fan_out (as timm).

        Skipped on the meta device: its tensors hold no values, and initialising them only runs torch's reference
        decompositions (measured 2.5 s for one 4.5-GFLOP network on a loaded 2-core box, most of a meta build)."""
        if any(p.is_meta for p in self.parameters()):
            return
        truncated = self.config.conv_bias
        classifier = self.head.fc
        for m in self.modules():
            # Linear layers inside blocks are 1x1 convs run channels-last: they get the convs' init
            if isinstance(m, (nn.Conv2d, nn.Linear, DeformConv2d)) and (truncated or m is not classifier):
                if truncated:
                    trunc_normal_(m.weight, std=0.02)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, DeformableConv):
                m.zero_offsets()  # the loop above gave their offset convs a conv's init

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups by depth (stem, stage or block, head last) for timm's layer-wise LR decay."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),  # with the stage's first block, as timm's ConvNeXt
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.tail", MATCH_PREV_GROUP),  # DenseNet's closing norm joins its last layer
                (r"^final_conv", MATCH_PREV_GROUP),  # Conv2Former's pre-pool conv joins the last block, as ConvNeXt's norm_pre
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (timm's --grad-checkpointing)."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The final Linear layer (Identity when num_classes is 0)."""
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for `num_classes` (0: none, forward gives pooled features); `global_pool` '' stops pooling."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        self.head_hidden_size = self.head.num_features

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (timm's feature API): `indices` as timm (None all, n the last n, or a list of stages).

        The final features (with Conv2Former's pre-pool conv) go through `forward_head` to `forward`'s output.
        `norm` is accepted for the API: these nets have no norm between the last stage and pooling.
        """
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        x = self.stem(x)
        last_idx = len(self.stages) - 1
        if torch.jit.is_scripting() or not stop_early:  # TorchScript cannot slice a Sequential
            stages = self.stages
        else:
            stages = self.stages[: max_index + 1]
        feat_idx = 0
        for feat_idx, stage in enumerate(stages):
            x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if feat_idx == last_idx:
            x = self.final_conv(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of `indices` and the head, so no unused parameters remain; returns the taken indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_head or prune_end:
            # The pre-pool conv and the head are sized for (and only fed by) the last stage: both go
            self.final_conv = nn.Identity()
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.num_classes = 0
            self.head = ClassifierHead(self.num_features, 0, pool_type="")
            self.head_hidden_size = self.num_features
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem, stages and (Conv2Former) the pre-pool conv: the unpooled final map."""
        return self.final_conv(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pooling, head norm, dropout and classifier (`pre_logits`: stop before the classifier)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (or pooled features when num_classes is 0)."""
        return self.forward_head(self.forward_features(x))


def _drop_path_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to `rate` over the blocks (timm/ConvNeXt convention)."""
    return [rate * i / (blocks - 1) if blocks > 1 else 0.0 for i in range(blocks)]


def with_output_stride(config: ArchConfig, output_stride: int) -> ArchConfig:
    """The config with its stages dilated as timm's ResNet does for `output_stride` (32: none dilated; 16: the last
    stage at dilation 2; 8: the last two at 2 and 4), like torchvision's replace_stride_with_dilation."""
    if output_stride not in OUTPUT_STRIDES:
        refuse("output_stride", f"must be one of {', '.join(map(str, OUTPUT_STRIDES))}", output_stride)
    if output_stride != 32 and config.downsample == "separate":
        refuse("output_stride", "must be 32 for networks with downsample separate (no strided block to dilate)", output_stride)
    if output_stride != 32 and any(s.block == "dense" for s in config.stages):
        refuse("output_stride", "must be 32 for networks with dense stages (a transition pools; it has no stride to dilate)", output_stride)
    stages, reduction, dilation = [], 4, 1
    for i, stage in enumerate(config.stages):
        if i and reduction >= output_stride:
            dilation *= 2
        elif i:
            reduction *= 2
        stages.append(dataclasses.replace(stage, dilation=dilation))
    if dilation > 4:
        refuse("output_stride", f"{output_stride} would dilate a stage by {dilation} (at most 4)", output_stride)
    return dataclasses.replace(config, stages=tuple(stages))


def build_network(config: ArchConfig, **overrides: Any) -> ConvSpaceNet:
    """Build a network with timm.create_model's keywords: genome ones (num_classes, in_chans, drop_path_rate,
    output_stride) change the config, build ones (global_pool, drop_rate, zero_init_last, device, dtype) how it is built."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(GENOME_KEYWORDS) - set(BUILD_KEYWORDS)
    if unknown:
        raise TypeError(f"unexpected model arguments: {sorted(unknown)}")
    if "output_stride" in overrides:
        config = with_output_stride(config, overrides.pop("output_stride"))
    genome = {k: v for k, v in overrides.items() if k in GENOME_KEYWORDS}
    build = {k: v for k, v in overrides.items() if k in BUILD_KEYWORDS}
    return ConvSpaceNet(dataclasses.replace(config, **genome) if genome else config, **build)
