"""Where a training runs, set up one way for both trainers: a CUDA GPU with AMP (fp16 autocast + grad scaling),
channels_last tensors and cuDNN autotuning (timm's train.py does the same), else the CPU in plain fp32."""

from __future__ import annotations

import ctypes
import gc
from contextlib import AbstractContextManager

import torch


def training_device() -> torch.device:
    """The GPU when there is one (Ray exposes a trial's share of it), else the CPU."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # inputs keep one shape through a run: tuned kernels pay off
        return torch.device("cuda")
    return torch.device("cpu")


def on_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model on the device; channels_last on CUDA, where its convolutions run faster."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def batch_on_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the device, images channels_last on CUDA to match the model."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x), y


def autocast(device: torch.device) -> AbstractContextManager:
    """Mixed precision on CUDA only (CPU autocast would run bf16, slower on most CPUs and not what we measured)."""
    return torch.autocast(device.type, enabled=device.type == "cuda")


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA; a pass-through on the CPU."""
    return torch.amp.GradScaler(enabled=device.type == "cuda")


def release_heap() -> None:
    """Hand the heap pages that earlier trainings freed back to the operating system.

    glibc keeps freed memory for reuse, so a reused Ray worker stayed at the peak of the largest network it had trained,
    memory the other trials on the machine could not have (measured: 1.53 GiB resident after five 4.5-GFLOPs proxy
    trainings in one process, 0.94 GiB with this after each). Does nothing without glibc. On CUDA,
    torch's cached blocks go back too, for the other trials packed on the GPU (--gpus-per-trial 0.25)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        pass
