"""The genome's vocabulary and the rule of each field on its own: what a stem, a stage and a network may hold.

The configs (space.config) check their fields with these rules, and a space file checks every value of every
dimension with them at load (space.space_file), so a value is refused the same way wherever it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from space.errors import refuse

STEMS = ("patchify", "resnet", "conv2former", "deep")
BLOCKS = ("basic", "bottleneck", "convmod", "dense")
CONVS = ("dense", "grouped", "depthwise", "shuffle", "separable", "splat", "deformable")
# The convs that take `groups`, with the fewest groups each allows (dense and depthwise keep groups 1).
GROUPED_CONVS = {"grouped": 2, "shuffle": 2, "separable": 1, "splat": 1, "deformable": 1}
DILATIONS = (1, 2, 4)
RADIX_MAX = 4
DEFAULT_RADIX = 2  # ResNeSt's and timm SplitAttn's; other convs keep it so that a stage has one way to be written
# DenseNet's growth rate (DenseNet-121/169/201) and DenseNet-BC's transition compression; other blocks keep them, as radix
DEFAULT_GROWTH = 32
DEFAULT_COMPRESSION = 0.5
ATTENTIONS = ("none", "se", "cbam")
NORMS = ("bn", "ln", "gn")
ACTS = ("relu", "gelu", "silu")
DOWNSAMPLES = ("strided", "separate")
COUNTS = ("all", "one")
DW_POSITIONS = ("middle", "first")
KERNEL_MIN, KERNEL_MAX = 3, 21
MAX_STAGES = 6


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """Refuse a value outside a fixed set of names (or numbers)."""
    if isinstance(value, bool) or value not in allowed:
        refuse(name, f"must be one of {', '.join(map(str, allowed))}", value)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Refuse a non-integer or an integer outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        refuse(name, "must be an integer", value)
    if value < low or (high is not None and value > high):
        refuse(name, f"must be in {low}..{high}" if high is not None else f"must be >= {low}", value)


def check_float(name: str, value: Any, low: float, high: float) -> None:
    """Refuse a non-number or a number outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        refuse(name, "must be a number", value)
    if not low <= value <= high:
        refuse(name, f"must be in [{low}, {high}]", value)


def check_bool(name: str, value: Any) -> None:
    """Refuse anything but true/false (YAML 'yes' already arrives as a bool)."""
    if not isinstance(value, bool):
        refuse(name, "must be true or false", value)


def check_kernel(name: str, value: Any) -> None:
    """Kernels are odd so that 'same' padding keeps the feature map centred."""
    check_int(name, value, KERNEL_MIN, KERNEL_MAX)
    if value % 2 == 0:
        refuse(name, f"must be odd ({KERNEL_MIN}, {KERNEL_MIN + 2}, ..., {KERNEL_MAX})", value)


def check_dilation(name: str, value: Any) -> None:
    """A stage's dilation replaces one stride of 2 or two of them (torchvision's replace_stride_with_dilation)."""
    check_int(name, value, 1)
    check_choice(name, value, DILATIONS)


Rule = Callable[[str, Any], None]


def one_of(allowed: tuple[str, ...]) -> Rule:
    """The rule of a field that takes one of fixed names."""
    return lambda name, value: check_choice(name, value, allowed)


def int_in(low: int, high: int | None = None) -> Rule:
    """The rule of an integer field in [low, high]."""
    return lambda name, value: check_int(name, value, low, high)


def float_in(low: float, high: float) -> Rule:
    """The rule of a number field in [low, high]."""
    return lambda name, value: check_float(name, value, low, high)


# The rules of each field on its own (cross-field rules sit in the classes): the configs check their fields
# with them, and a space checks every value of every dimension with them at load (space.choices).
STEM_RULES: dict[str, Rule] = {"type": one_of(STEMS), "width": int_in(1), "norm": one_of(NORMS)}
STAGE_RULES: dict[str, Rule] = {
    "depth": int_in(1, 256), "width": int_in(1), "block": one_of(BLOCKS), "kernel": check_kernel,
    "expansion": float_in(0.0625, 16), "conv": one_of(CONVS), "groups": int_in(1), "attention": one_of(ATTENTIONS),
    "dilation": check_dilation, "radix": int_in(1, RADIX_MAX), "growth": int_in(1, 1024), "compression": float_in(0.0625, 1.0),
}
ARCH_RULES: dict[str, Rule] = {
    "downsample": one_of(DOWNSAMPLES), "norm": one_of(NORMS), "act": one_of(ACTS), "norms_per_block": one_of(COUNTS),
    "acts_per_block": one_of(COUNTS), "dw_position": one_of(DW_POSITIONS), "conv_bias": check_bool,
    "layer_scale_init": float_in(0.0, 10.0), "head_width": int_in(0), "head_norm": check_bool,
    "drop_path_rate": float_in(0.0, 0.99), "num_classes": int_in(0), "in_chans": int_in(1),
}


def check_fields(config: Any, rules: dict[str, Rule]) -> None:
    """Check each field that has a rule, in declaration order (the first bad field is the one named)."""
    for f in fields(config):
        if f.name in rules:
            rules[f.name](f.name, getattr(config, f.name))
