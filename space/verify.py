"""The reference count: fvcore on a built model (slow; the analytic `space.cost` is checked against it)."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from space.cost import BILINEAR_FLOPS

DEFORM_CONV2D = "torchvision::deform_conv2d"


def deform_conv2d_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for torchvision's deform_conv2d, which fvcore does not count: the conv plus its bilinear sampling.

    The op (torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp) first samples, for each output position, kernel tap
    and input channel, one input value at the learnt offset (`deformable_im2col`; `bilinear_interpolate` takes the
    weighted sum of the 4 neighbouring pixels), then multiplies the sampled columns by the weights as a dense conv
    would. Counted in fvcore's convention (one multiply-add = one FLOP; element-wise products and biases free):
    out * in/groups * kh*kw multiply-adds per output position for the conv, as fvcore's conv handle, plus 4 per
    sampled value, as fvcore's own `aten::grid_sampler` and `aten::upsample_bilinear2d` handles count a bilinear
    sample. The modulation mask of DCNv2 (an element-wise product) adds nothing.
    Inputs: input, weight, offset, mask, bias, stride, padding, dilation, groups, offset groups, use_mask.
    """
    batch, in_ch, _, _ = get_shape(inputs[0])
    _, in_per_group, kh, kw = get_shape(inputs[1])
    _, out_ch, out_h, out_w = get_shape(outputs[0])
    positions = batch * out_h * out_w
    return positions * kh * kw * (out_ch * in_per_group + BILINEAR_FLOPS * in_ch)


def fvcore_flops(model: nn.Module, resolution: int, in_chans: int | None = None) -> int:
    """fvcore's total in eval mode at batch 1 (deform_conv2d counted by our handle), its warnings about uncounted ops silenced."""
    channels = in_chans or getattr(model, "in_chans", 3)
    was_training = model.training
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, channels, resolution, resolution))
    analysis.set_op_handle(DEFORM_CONV2D, deform_conv2d_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    try:
        return int(analysis.total())
    finally:
        model.train(was_training)
