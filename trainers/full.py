"""Full training of a registered model with the ConvNeXt recipe, built from timm's pieces: `convspace train`, the
documented way to train an exported network fully (nas/export/timm_script.py runs timm's own scripts for what this cannot do:
several GPUs, timm's other recipe options).

AdamW (lr 4e-3 per 4096 images, scaled linearly with the batch), weight decay 0.05, warmup + cosine to
1e-6, RandAugment rand-m9-mstd0.5-inc1, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, random erasing 0.25,
bicubic resize, stochastic depth by size, EMA 0.9999 (off for BatchNorm models). A checkpoint is written
atomically after every epoch; `resume` restores epoch, optimizer, scheduler, EMA, scaler and RNG states.
The model comes from timm's registry by name: the caller registers what it needs (e.g. `nas.export.zoo`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, accuracy
from torch.utils.data import DataLoader

from space.errors import ConvspaceError
from space.files import written_atomically
from trainers.data import image_datasets
from trainers.device import autocast, batch_on_device, grad_scaler, on_device, training_device
from trainers.events import EpochTrained, StepEnded
from trainers.settings import TrainSettings


def drop_path_by_size(params: int) -> float:
    """ConvNeXt's stochastic depth: 0.1 for T (28M), 0.4 for S (50M), 0.5 for B/L (89M+)."""
    return 0.1 if params < 40e6 else 0.4 if params < 70e6 else 0.5


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# What a checkpoint holds besides tensors and plain data (dicts, lists, numbers, strings): numpy's RNG state, one
# uint32 array. `torch.load(weights_only=True)` admits these and nothing else, so a planted file cannot run code.
CHECKPOINT_GLOBALS = [np.ndarray, np.dtype, np.dtypes.UInt32DType, np._core.multiarray._reconstruct]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint this module wrote, loaded as data; anything else (a file holding other objects, a broken file) is
    a one-line error and nothing of it runs."""
    import pickle

    try:
        with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only refuses: a global that is not allowed
        found = next((line.strip().rstrip(".") for line in str(exc).splitlines() if "GLOBAL" in line), "objects other than weights and data")
        raise ConvspaceError(f"resume: {path} holds more than weights and plain data ({found[:200]}); it was not loaded "
                             "(a checkpoint written by `train` holds only those)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvspaceError(f"resume: {path} is not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or not {"model", "settings", "epoch"} <= set(checkpoint) or not isinstance(checkpoint["settings"], dict):
        raise ConvspaceError(f"resume: {path} is not a checkpoint written by `train` (it lacks model, settings or epoch)")
    return checkpoint


def save_atomically(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, then rename (space.files.written_atomically): a crash never leaves half a checkpoint."""
    with written_atomically(path, binary=True) as out:
        torch.save(state, out)


def from_workers(loader: DataLoader) -> Any:
    """The loader's batches; a ConvspaceError from a worker process (say, an image refused by `open_rgb`), which torch
    raises again with the worker's traceback in its message, raised as its own one line."""
    try:
        yield from loader
    except ConvspaceError as exc:
        lines = str(exc).strip().splitlines()
        if len(lines) < 2:
            raise
        raise ConvspaceError(lines[-1].split("ConvspaceError: ", 1)[-1]) from None


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, num_classes: int) -> tuple[float, float]:
    """Top-1 and top-5 (top-k capped by the classes) in percent."""
    model.eval()
    top1 = top5 = count = 0.0
    k = min(5, num_classes)
    with torch.no_grad(), autocast(device):
        for x, y in from_workers(loader):
            x, y = batch_on_device(x, y, device)
            a1, a5 = accuracy(model(x), y, topk=(1, k))
            top1, top5, count = top1 + a1.item() * len(y), top5 + a5.item() * len(y), count + len(y)
    return top1 / count, top5 / count


def train(s: TrainSettings, resume: bool = False, progress: Callable[[StepEnded | EpochTrained], None] | None = None) -> dict[str, Any]:
    """Train (or resume) and return the last epoch's summary; logs one JSON line per epoch to <output>/log.jsonl and
    tells `progress` each step and each epoch (trainers.events)."""
    out = Path(s.output)
    checkpoint_path, log_path = out / "last.pth", out / "log.jsonl"
    checkpoint = None
    if resume:
        if not checkpoint_path.exists():
            raise ConvspaceError(f"resume: no checkpoint at {checkpoint_path}")
        checkpoint = load_checkpoint(checkpoint_path)
        if checkpoint["settings"]["model"] != s.model:
            raise ConvspaceError(f"resume: {checkpoint_path} trains {checkpoint['settings']['model']}, not {s.model}")
    if not timm.models.is_model(s.model):
        raise ConvspaceError(f"model: {s.model!r} is not a registered model (export one, or see `presets`)")
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    device = training_device()

    pretrained_cfg = timm.models.get_pretrained_cfg(s.model)
    data_cfg = resolve_data_config({"input_size": (3, s.resolution, s.resolution)} if s.resolution else {},
                                   pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None)
    drop_path = s.drop_path
    if drop_path is None:  # sized on the meta device: no memory, no second real build
        with torch.device("meta"):
            drop_path = drop_path_by_size(sum(p.numel() for p in timm.create_model(s.model).parameters()))
    train_tf = create_transform(data_cfg["input_size"], is_training=True, auto_augment=s.randaugment, re_prob=s.reprob,
                                interpolation="bicubic", mean=data_cfg["mean"], std=data_cfg["std"])
    val_tf = create_transform(data_cfg["input_size"], interpolation="bicubic", mean=data_cfg["mean"], std=data_cfg["std"],
                              crop_pct=data_cfg["crop_pct"])
    data = image_datasets(s.data, s.seed, s.data_dir, train_tf, val_tf)
    model = on_device(timm.create_model(s.model, num_classes=data.num_classes, drop_path_rate=drop_path), device)
    uses_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    ema = None if uses_bn or not s.ema_decay else ModelEmaV3(model, decay=s.ema_decay)

    train_loader = DataLoader(data.train, s.batch_size, shuffle=True, drop_last=True, num_workers=s.workers,
                              generator=torch.Generator().manual_seed(s.seed))
    if len(train_loader) == 0:
        raise ConvspaceError(f"batch-size: {s.batch_size} is larger than the {len(data.train)} training images")
    val_loader = DataLoader(data.val, s.batch_size, num_workers=s.workers)
    mixup = None
    if s.mixup or s.cutmix:
        mixup = Mixup(mixup_alpha=s.mixup, cutmix_alpha=s.cutmix, label_smoothing=s.smoothing, num_classes=data.num_classes)
    loss_fn = SoftTargetCrossEntropy() if mixup else LabelSmoothingCrossEntropy(s.smoothing)
    optimizer = create_optimizer_v2(model, "adamw", lr=s.scaled_lr, weight_decay=s.weight_decay)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=s.epochs, warmup_epochs=min(s.warmup_epochs, s.epochs - 1),
                                       warmup_lr=1e-6, min_lr=s.min_lr, updates_per_epoch=len(train_loader))
    scaler = grad_scaler(device)

    start_epoch, best = 0, 0.0
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["settings"]["epochs"] == s.epochs:  # else the new length's schedule applies from this step on
            scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None and checkpoint["ema"] is not None:
            ema.load_state_dict(checkpoint["ema"])
        _set_rng_state(checkpoint["rng"])
        train_loader.generator.set_state(checkpoint["loader_rng"])
        start_epoch, best = checkpoint["epoch"] + 1, checkpoint["best_top1"]
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for epoch in range(start_epoch, s.epochs):
        model.train()
        started, total_loss, steps = time.perf_counter(), 0.0, len(train_loader)
        for i, (x, y) in enumerate(from_workers(train_loader)):
            x, y = batch_on_device(x, y, device)
            if mixup:
                x, y = mixup(x, y)  # mixes in place: x keeps its memory format
            with autocast(device):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step_update(epoch * steps + i + 1)
            if ema is not None:
                ema.update(model, step=epoch * steps + i + 1)
            total_loss += loss.item()
            if progress:
                progress(StepEnded(epoch + 1, i + 1, steps))
        scheduler.step(epoch + 1)
        top1, top5 = evaluate(model, val_loader, device, data.num_classes)
        summary = {"epoch": epoch + 1, "train_loss": total_loss / steps, "top1": top1, "top5": top5,
                   "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 2)}
        if ema is not None:
            summary["ema_top1"], summary["ema_top5"] = evaluate(ema.module, val_loader, device, data.num_classes)
        best = max(best, top1)
        summary["best_top1"] = best
        save_atomically({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                         "rng": _rng_state(), "loader_rng": train_loader.generator.get_state(), "epoch": epoch,
                         "best_top1": best, "settings": asdict(s)}, checkpoint_path)
        with log_path.open("a") as log:
            log.write(json.dumps(summary) + "\n")
        if progress:
            progress(EpochTrained(summary))
    return summary
