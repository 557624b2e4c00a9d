"""Channel arithmetic that the genome's rules, the layer plan and the cost model share, as timm computes it (no torch)."""

from __future__ import annotations


def make_divisible(value: float, divisor: int, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm.layers.make_divisible, copied because the data modules must not import torch (through timm)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


def round8(value: float) -> int:
    """The space's widths (base width x multiplier, stem ratio x first width) as multiples of 8, at least 8.

    Not make_divisible above, on purpose: that is timm's rule for the widths timm derives inside its layers (SE and
    split attention MLPs), which must match timm's exactly for equal parameter counts; this one is the parametrisation's,
    and stored studies name their networks through it (changing it would change the network a stored trial's params
    give). The two differ on ties (round8 rounds half to even: 20 -> 16; timm rounds half up: 20 -> 24) and below 90%
    of the value (timm adds a step)."""
    return max(8, int(round(value / 8)) * 8)


def attention_channels(kind: str, channels: int) -> int:
    """Reduced width of the attention MLP: timm's SE (ratio 1/16, divisor 8) and CBAM (ratio 1/16, divisor 1), no round limit."""
    return make_divisible(channels / 16, 8 if kind == "se" else 1, round_limit=0.0)


def splat_attention_channels(channels: int, radix: int) -> int:
    """Width of the MLP inside timm's SplitAttn: channels * radix / 4, a multiple of 8, at least 32."""
    return make_divisible(channels * radix * 0.25, 8, min_value=32)


def inner_width(width: int, expansion: float) -> int:
    """Width of a block's expanded (or reduced) middle."""
    return max(1, round(width * expansion))


def transition_width(channels: int, compression: float) -> int:
    """Output width of a DenseNet transition: the compressed input (timm's `num_features // 2` at compression 0.5)."""
    return max(1, int(channels * compression))
