"""The reference count: fvcore on a built model (slow; the analytic `space.cost` is checked against it)."""

from __future__ import annotations

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn


def fvcore_flops(model: nn.Module, resolution: int, in_chans: int | None = None) -> int:
    """fvcore's total in eval mode at batch 1, its warnings about uncounted ops silenced."""
    channels = in_chans or getattr(model, "in_chans", 3)
    was_training = model.training
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, channels, resolution, resolution))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    try:
        return int(analysis.total())
    finally:
        model.train(was_training)
