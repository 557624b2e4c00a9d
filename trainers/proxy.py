"""The short proxy training one trial runs: a few epochs at a small resolution, val top-1 after each.

It knows nothing of Ray or Optuna: progress leaves through the `on_epoch` callback.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from timm.layers import DropPath
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.optim.swa_utils import update_bn

from space.config import ArchConfig
from space.network import build_network
from trainers.batches import Batches
from trainers.data import Data, load_data
from trainers.device import autocast, batch_on_device, grad_scaler, on_device, release_heap, training_device
from trainers.settings import ProxySettings


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: this trial fails, the search goes on."""


@dataclass(frozen=True)
class ProxyResult:
    accuracy: float
    epochs: int
    train_seconds: float


def evaluate(model: torch.nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    """Top-1 accuracy in [0, 1]."""
    model.eval()
    correct = total = 0
    with torch.no_grad(), autocast(device):
        for x, y in loader:
            x, y = batch_on_device(x, y, device)
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / max(total, 1)


def recalibrate_batchnorm(model: torch.nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], batches: int,
                          device: torch.device) -> None:
    """Re-estimate BatchNorm running statistics with the final weights before an evaluation.

    After a few hundred steps the running averages still mix statistics of earlier weights; in deep BN nets
    with depthwise convs eval-mode accuracy then sits at chance while the same net scores ~90% on batch
    statistics (measured on roadmap_04_width). Re-estimating them, as weight-sharing NAS does before it ranks
    subnets, makes the proxy score the network rather than its stale statistics. PyTorch's `update_bn` does
    the work (a no-op for nets without BatchNorm), with stochastic depth off so that the statistics are those
    of the network that is evaluated, not of randomly thinned ones."""
    if batches <= 0:
        return
    drop_paths = [(m, m.drop_prob) for m in model.modules() if isinstance(m, DropPath)]
    for module, _ in drop_paths:
        module.drop_prob = 0.0
    try:
        with torch.no_grad():  # update_bn runs forward with autograd on: it would keep a training step's activations
            update_bn((x.to(device) for x, _ in itertools.islice(loader, batches)), model)  # lazy: untouched without BN
    finally:
        for module, rate in drop_paths:
            module.drop_prob = rate


def train(
    config: ArchConfig,
    settings: ProxySettings,
    on_epoch: Callable[[int, float, float], None] | None = None,
    data: Data | None = None,
    should_stop: Callable[[], bool] | None = None,
    seed: int | None = None,
) -> ProxyResult:
    """Train `config` for settings.epochs (AdamW, warmup + cosine, label smoothing).

    After each epoch `on_epoch(epoch, val_top1, seconds)` gets the seconds spent in training steps and evaluation so far.
    `should_stop()` is asked before every step (e.g. a wall-clock cap): once it says yes, training ends and the result
    holds the epochs completed so far and the last of their accuracies.
    `seed` (default settings.seed) seeds the initialisation, the training subset and the batch order; the data split
    stays settings.seed's, so that repeated seeds of one network (`confirm`) are scored on the same validation images.
    """
    # The previous trial of this (reused) worker is garbage now. Released here, not after this training: Ray reuses a
    # worker only if the trainable returns within 2 s of its last report, and the release takes up to a second.
    release_heap()
    seed = settings.seed if seed is None else seed
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, settings.threads))
    device = training_device()
    data = data or load_data(settings.data, settings.resolution, settings.seed, settings.data_dir, settings.cache_dir)
    model = on_device(build_network(config, num_classes=data.num_classes, in_chans=data.in_chans), device)
    generator = torch.Generator().manual_seed(seed)
    count = len(data.train)
    subset = None
    if settings.train_images and settings.train_images < count:
        subset = torch.randperm(count, generator=generator)[: settings.train_images]
        count = settings.train_images
    # Full batches only (a last batch of a few images would be a noisy step), unless the set is smaller than one
    # batch: dropping it then left an epoch of zero steps, and the network was scored untrained.
    train_batches = Batches(data.train, settings.batch_size, device, indices=subset, generator=generator,
                            drop_last=count > settings.batch_size, augment_seed=seed if settings.augment else None)
    val_batches = Batches(data.val, settings.batch_size * 2, device)
    steps_per_epoch = max(1, len(train_batches))
    optimizer = create_optimizer_v2(model, "adamw", lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = CosineLRScheduler(
        optimizer, t_initial=settings.epochs * steps_per_epoch, warmup_t=int(settings.warmup_epochs * steps_per_epoch),
        warmup_lr_init=settings.lr / 100, lr_min=settings.lr / 100, t_in_epochs=False,
    )
    loss_fn = LabelSmoothingCrossEntropy(settings.label_smoothing)
    scaler = grad_scaler(device)
    started, accuracy, step = time.perf_counter(), 0.0, 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        for x, y in train_batches:
            if should_stop and should_stop():
                return ProxyResult(accuracy, epoch - 1, time.perf_counter() - started)
            with autocast(device):
                loss = loss_fn(model(x), y)
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            scheduler.step_update(step)
        recalibrate_batchnorm(model, train_batches.epoch(augment=False), settings.bn_batches, device)  # as it is evaluated
        accuracy = evaluate(model, val_batches, device)
        if on_epoch:
            on_epoch(epoch, accuracy, time.perf_counter() - started)
    return ProxyResult(accuracy, settings.epochs, time.perf_counter() - started)
