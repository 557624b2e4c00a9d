"""Published networks and the ConvNeXt roadmap steps, each one point of the design space.

Sources: ../shared/reference (ConvNeXt paper Section 2 / Fig. 2; Conv2Former authors' code); timm's resnest.py,
resnet.py (wide_resnet50_2) and densenet.py.
A network that timm also builds is a preset only where its params and fvcore FLOPs equal timm's model
exactly (tested). A ShuffleNet-flavoured ResNeXt (conv shuffle) is not one: timm has no such model to match.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from space.config import ArchConfig, StageConfig, StemConfig
from space.errors import ConvspaceError
from space.rules import DEFAULT_COMPRESSION
from space.widths import transition_width


def _stages(depths: tuple[int, ...], widths: tuple[int, ...], **block: Any) -> tuple[StageConfig, ...]:
    return tuple(StageConfig(depth=d, width=w, **block) for d, w in zip(depths, widths))


def _change(cfg: ArchConfig, stem: dict[str, Any] | None = None, stage: dict[str, Any] | None = None, **arch: Any) -> ArchConfig:
    """A copy of `cfg` with some fields changed (on the stem, on every stage, on the network)."""
    if stem:
        arch["stem"] = dataclasses.replace(cfg.stem, **stem)
    if stage:
        arch["stages"] = tuple(dataclasses.replace(s, **stage) for s in arch.get("stages", cfg.stages))
    return dataclasses.replace(cfg, **arch)


_RESNET_BOTTLENECK = dict(block="bottleneck", kernel=3, expansion=0.25, conv="dense", groups=1, attention="none")
_CONVNEXT_BLOCK = dict(block="bottleneck", kernel=7, expansion=4.0, conv="depthwise", groups=1, attention="none")
_CONVMOD_BLOCK = dict(block="convmod", kernel=11, expansion=4.0, conv="depthwise", groups=1, attention="none")
_COMMON = dict(drop_path_rate=0.0, num_classes=1000, in_chans=3)

RESNET50 = ArchConfig(
    stem=StemConfig(type="resnet", width=64, norm="bn"),
    stages=_stages((3, 4, 6, 3), (256, 512, 1024, 2048), **_RESNET_BOTTLENECK),
    downsample="strided", norm="bn", act="relu", norms_per_block="all", acts_per_block="all",
    dw_position="middle", conv_bias=False, layer_scale_init=0.0, head_width=0, head_norm=False, **_COMMON,
)


def convnext(depths: tuple[int, ...], widths: tuple[int, ...]) -> ArchConfig:
    """ConvNeXt (Liu et al. 2022) as timm builds it."""
    return ArchConfig(
        stem=StemConfig(type="patchify", width=widths[0], norm="ln"),
        stages=_stages(depths, widths, **_CONVNEXT_BLOCK),
        downsample="separate", norm="ln", act="gelu", norms_per_block="one", acts_per_block="one",
        dw_position="first", conv_bias=True, layer_scale_init=1e-6, head_width=0, head_norm=True, **_COMMON,
    )


def conv2former(depths: tuple[int, ...], widths: tuple[int, ...]) -> ArchConfig:
    """Conv2Former (Hou et al.) as the authors' code builds it: conv stem (BN), ConvMod k=11, 1280-wide head."""
    return ArchConfig(
        stem=StemConfig(type="conv2former", width=widths[0], norm="bn"),
        stages=_stages(depths, widths, **_CONVMOD_BLOCK),
        downsample="separate", norm="ln", act="gelu", norms_per_block="one", acts_per_block="one",
        dw_position="first", conv_bias=True, layer_scale_init=1e-6, head_width=1280, head_norm=False, **_COMMON,
    )


def densenet(depths: tuple[int, ...], growth: int = 32, stem_width: int | None = None, kernel: int = 3,
             expansion: float = 4.0, compression: float = DEFAULT_COMPRESSION) -> ArchConfig:
    """DenseNet-BC (Huang et al. 2017) as timm builds it: a ResNet stem of 2 x growth channels, dense stages of 1x1
    bottlenecks (expansion x growth) and `kernel` convs, transitions that compress by `compression` and pool, and a
    final norm-act. Each stage's width is what it puts out (derived from the growth)."""
    stem_width = stem_width or 2 * growth
    stages, previous = [], stem_width
    for i, depth in enumerate(depths):
        first_in = transition_width(previous, compression) if i else previous
        previous = first_in + depth * growth
        stages.append(StageConfig(depth=depth, width=previous, block="dense", kernel=kernel, expansion=expansion, conv="dense",
                                  groups=1, attention="none", growth=growth, compression=compression if i else DEFAULT_COMPRESSION))
    return ArchConfig(
        stem=StemConfig(type="resnet", width=stem_width, norm="bn"), stages=tuple(stages),
        downsample="separate", norm="bn", act="relu", norms_per_block="all", acts_per_block="all",
        dw_position="middle", conv_bias=False, layer_scale_init=0.0, head_width=0, head_norm=False, **_COMMON,
    )


def _roadmap() -> dict[str, ArchConfig]:
    """The ConvNeXt paper's 'modernizing a ResNet' steps from ResNet-50, each a change of the previous one."""
    steps: dict[str, ArchConfig] = {}
    cfg = steps["roadmap_00_resnet50"] = RESNET50
    cfg = steps["roadmap_01_stage_ratio"] = _change(cfg, stages=_stages((3, 3, 9, 3), (256, 512, 1024, 2048), **_RESNET_BOTTLENECK))
    cfg = steps["roadmap_02_patchify_stem"] = _change(cfg, stem=dict(type="patchify"))
    cfg = steps["roadmap_03_depthwise"] = _change(cfg, stage=dict(conv="depthwise"))
    cfg = steps["roadmap_04_width"] = _change(
        cfg, stem=dict(width=96), stages=_stages((3, 3, 9, 3), (384, 768, 1536, 3072), **{**_RESNET_BOTTLENECK, "conv": "depthwise"})
    )
    cfg = steps["roadmap_05_inverted_bottleneck"] = _change(
        cfg, stages=_stages((3, 3, 9, 3), (96, 192, 384, 768), **{**_CONVNEXT_BLOCK, "kernel": 3})
    )
    cfg = steps["roadmap_06_move_up_dwconv"] = _change(cfg, dw_position="first")
    for kernel in (5, 7, 9, 11):
        steps[f"roadmap_07_kernel{kernel}"] = _change(cfg, stage=dict(kernel=kernel))
    cfg = steps["roadmap_08_gelu"] = _change(steps["roadmap_07_kernel7"], act="gelu")
    cfg = steps["roadmap_09_fewer_activations"] = _change(cfg, acts_per_block="one")
    cfg = steps["roadmap_10_fewer_norms"] = _change(cfg, norms_per_block="one")
    cfg = steps["roadmap_11_layernorm"] = _change(cfg, norm="ln", stem=dict(norm="ln"))
    steps["roadmap_12_separate_downsampling"] = _change(
        cfg, downsample="separate", conv_bias=True, layer_scale_init=1e-6, head_norm=True
    )
    return steps


PRESETS: dict[str, ArchConfig] = {
    "resnet50": RESNET50,
    "resnext50_32x4d": _change(RESNET50, stage=dict(expansion=0.5, conv="grouped", groups=32)),
    # timm's resnest50d: deep stem (32, 32, 64), split attention of radix 2 and cardinality 1, strided by a 3x3
    # average pool after it (avd). Its shortcut average-pools before the 1x1 conv where ours strides the conv:
    # neither the pool nor the skipped pixels hold parameters or fvcore FLOPs, so the counts are equal.
    "resnest50d": _change(RESNET50, stem=dict(type="deep"), stage=dict(conv="splat", groups=1, radix=2)),
    # timm's wide_resnet50_2: ResNet-50 with bottlenecks twice as wide inside (inner = width / 2, not width / 4)
    "wide_resnet50_2": _change(RESNET50, stage=dict(expansion=0.5)),
    "densenet121": densenet((6, 12, 24, 16)),
    "densenet169": densenet((6, 12, 32, 32)),
    "densenet201": densenet((6, 12, 48, 32)),
    "convnext_tiny": convnext((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": convnext((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": convnext((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnext_large": convnext((3, 3, 27, 3), (192, 384, 768, 1536)),
    "conv2former_n": conv2former((2, 2, 8, 2), (64, 128, 256, 512)),
    "conv2former_t": conv2former((3, 3, 12, 3), (72, 144, 288, 576)),
    "conv2former_s": conv2former((4, 4, 32, 4), (72, 144, 288, 576)),
    "conv2former_b": conv2former((4, 4, 34, 4), (96, 192, 384, 768)),
    "conv2former_l": conv2former((4, 4, 48, 4), (128, 256, 512, 1024)),
    **_roadmap(),
}

# What the Conv2Former paper reports (params in M, GFLOPs at 224); the roadmap's ImageNet top-1 is in studies/roadmap.yaml.
CONV2FORMER_PAPER = {
    "conv2former_n": (15, 2.2), "conv2former_t": (27, 4.4), "conv2former_s": (50, 8.7),
    "conv2former_b": (90, 15.9), "conv2former_l": (199, 36.0),
}


def get_preset(name: str) -> ArchConfig:
    """A preset by name, or a user error listing the names."""
    if name not in PRESETS:
        raise ConvspaceError(f"preset: unknown name {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
