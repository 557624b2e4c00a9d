"""Both trainers' device set-up: on a machine without a GPU, plain fp32 in the default memory format."""

import pytest
import torch

from trainers.device import autocast, batch_on_device, grad_scaler, on_device, training_device

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU set-up")


def test_without_a_gpu_training_runs_on_the_cpu_in_fp32():
    device = training_device()
    assert device.type == "cpu"
    model = on_device(torch.nn.Conv2d(3, 4, 3), device)
    x, y = batch_on_device(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), device)
    with autocast(device):
        out = model(x)
    assert out.dtype == torch.float32 and x.is_contiguous() and model.weight.is_contiguous()
    assert not grad_scaler(device).is_enabled()
