"""What decides a training: the proxy's and the full recipe's settings, and which data a name means.

No torch here: the command line checks every setting and data path in a fraction of a second, before
torch, timm or Ray are imported (a mistake must not wait for them).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from space.cost import check_resolution
from space.errors import ConvspaceError, require

DATASETS = ("digits", "cifar10", "cifar100", "synthetic", "<ImageFolder path>")
SMALL_DATASETS = ("digits", "synthetic")  # held in memory as tensors
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}  # torchvision's extracted layout
STUDIES_DIR = "studies"  # where convspace keeps what it makes for a user by default (git-ignored): studies, cache, exports
DEFAULT_CACHE_DIR = f"{STUDIES_DIR}/cache"  # beside the studies' SQLite files
RUN_ONLY = ("threads", "cache_dir")  # ProxySettings fields that are not part of a study's identity
MAX_LR = 1.0
BASE_LR, BASE_LR_BATCH = 4e-3, 4096  # the full recipe's peak lr per batch of 4096 images (ConvNeXt), scaled linearly
MAX_SEED = 2**32 - 1  # numpy's and Python's seeding take 32-bit seeds everywhere we pass them


def option(help: str, **cli: Any) -> dict[str, Any]:
    """A settings field's command-line option, as its `metadata` (console/options.py makes the typer option from it, so
    the default and the help are written once, beside the field): its help, and how the command line spells it where
    that is not `--field-name <type>`: `decls` (e.g. "--augment/--no-augment"), `flops` (text such as 4.5GFLOPs, read by
    space.cost.parse_flops), `none_as` (the command-line value that stands for None, e.g. 0 for all images)."""
    return {"help": help, **cli}


def check_seed(name: str, seed: int) -> None:
    """A seed every generator we seed accepts."""
    require(not isinstance(seed, bool) and 0 <= seed <= MAX_SEED, name, f"must be in 0..{MAX_SEED}", seed)


@dataclass(frozen=True)
class ProxySettings:
    """Everything that decides a proxy score (stored with each trial so scores stay comparable)."""

    epochs: int = field(default=3, metadata=option("Proxy training epochs per trial."))
    resolution: int = field(default=32, metadata=option("Proxy training resolution (>= 32: the networks reduce 32x)."))
    batch_size: int = field(default=64, metadata=option("Proxy batch size."))
    lr: float = field(default=2e-3, metadata=option("Proxy peak learning rate (AdamW)."))
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    train_images: int | None = field(default=768, metadata=option(  # a fixed subset per trial keeps the proxy cheap; None: all
        "Training images per proxy epoch (a fixed seeded subset; 0: all).", none_as=0))
    bn_batches: int = field(default=4, metadata=option(
        "Training batches that re-estimate BatchNorm statistics before each evaluation (0: off)."))
    data: str = field(default="digits", metadata=option("digits (embedded), cifar10, cifar100, an ImageFolder path, or synthetic (tests)."))
    data_dir: str | None = field(default=None, metadata=option("Where CIFAR files live (default ./data)."))
    seed: int = 0  # no option of its own: each command's --seed seeds the proxy too
    # Random crops (reflect-padded) and horizontal flips, batch-wise on the device. None: on for photographs (CIFAR, an
    # ImageFolder), off for digits, where a flipped 2, 3, 4, 5, 7 or 9 is no digit at all, and for synthetic (tests).
    augment: bool | None = field(default=None, metadata=option(
        "Random crops (reflect-padded) and horizontal flips of the training images, batch-wise on the device; part of the "
        "study's identity. Default: on for cifar10/100 and ImageFolders, off for digits (a flipped digit is another or none).",
        decls="--augment/--no-augment"))
    threads: int = 1
    cache_dir: str | None = field(default=None, metadata=option(  # how a trial runs, not what it scores
        f"Where CIFAR and ImageFolders are decoded once at the proxy resolution, for every trial and later run to memory-map "
        f"(default {DEFAULT_CACHE_DIR}). Not part of the study's identity."))

    def __post_init__(self) -> None:
        """A bad value fails here in one line, before any trial starts (else every trial would fail alike).

        `augment` and `cache_dir` are made concrete here, in the driver, so that every trial gets the same values: the
        data's default augmentation, and an absolute cache folder (a trial's working folder may be another one)."""
        if self.augment is None:
            object.__setattr__(self, "augment", self.data not in SMALL_DATASETS)  # frozen: the only way to set a default
        object.__setattr__(self, "cache_dir", str(Path(self.cache_dir or DEFAULT_CACHE_DIR).expanduser().absolute()))
        check_cache_dir(self.cache_dir)
        require(self.epochs >= 1, "epochs", "must be >= 1", self.epochs)
        check_resolution("resolution", self.resolution)  # below it every network fails in its last stage
        require(self.batch_size >= 1, "batch-size", "must be >= 1", self.batch_size)
        require(0 < self.lr <= MAX_LR, "lr", f"must be in (0, {MAX_LR:g}] (AdamW diverges far below its top; 1e-4..1e-2 is usual)", self.lr)
        check_seed("seed", self.seed)
        require(self.weight_decay >= 0, "weight-decay", "must be >= 0", self.weight_decay)
        require(self.warmup_epochs >= 0, "warmup-epochs", "must be >= 0", self.warmup_epochs)
        require(0 <= self.label_smoothing < 1, "label-smoothing", "must be in [0, 1)", self.label_smoothing)
        require(self.train_images is None or self.train_images >= 1, "train-images", "must be >= 1, or none (0 on the command line) for all", self.train_images)
        require(self.bn_batches >= 0, "bn-batches", "must be >= 0 (0: off)", self.bn_batches)
        require(self.threads >= 1, "threads", "must be >= 1", self.threads)

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """The settings a study keeps and compares on resume: all but those that change how a trial runs, not its score."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY}


@dataclass(frozen=True)
class TrainSettings:
    """The full recipe; defaults are the ConvNeXt paper's (reference/convnext_roadmap.md)."""

    model: str = field(metadata=option("A registered model: an exported entry, a convspace_<preset>, or any timm model."))
    data: str = field(default="digits", metadata=option("digits (embedded), cifar10, cifar100 or an ImageFolder path."))
    data_dir: str | None = field(default=None, metadata=option("Where CIFAR files live."))
    output: str = field(default="runs/train", metadata=option("Folder for last.pth (every epoch) and log.jsonl."))
    epochs: int = field(default=300, metadata=option("Epochs (ConvNeXt: 300)."))
    batch_size: int = field(default=128, metadata=option("Batch size (the lr scales with it)."))
    lr: float | None = field(default=None, metadata=option(f"Peak lr (default {BASE_LR:g} x batch / {BASE_LR_BATCH})."))
    weight_decay: float = 0.05
    warmup_epochs: int = field(default=20, metadata=option("Linear warmup epochs (ConvNeXt: 20)."))
    min_lr: float = 1e-6
    resolution: int | None = field(default=None, metadata=option("Input size (default: the model's, 224)."))  # pretrained_cfg's
    randaugment: str = "rand-m9-mstd0.5-inc1"
    mixup: float = field(default=0.8, metadata=option("Mixup alpha (0 disables)."))
    cutmix: float = field(default=1.0, metadata=option("CutMix alpha (0 disables)."))
    smoothing: float = 0.1
    reprob: float = 0.25
    drop_path: float | None = field(default=None, metadata=option(  # None: by size, as ConvNeXt T/S/B/L
        "Stochastic depth (default by size: 0.1 / 0.4 / 0.5)."))
    ema_decay: float = field(default=0.9999, metadata=option("EMA decay (0 disables; always off for BatchNorm models)."))
    workers: int = field(default=0, metadata=option("Data loader worker processes."))
    seed: int = field(default=0, metadata=option("Seed."))

    def __post_init__(self) -> None:
        """A bad value fails here in one line, before anything is built (timm and torch would assert mid-run)."""
        require(self.epochs >= 1, "epochs", "must be >= 1", self.epochs)
        require(self.batch_size >= 2, "batch-size", "must be >= 2", self.batch_size)
        require(self.batch_size % 2 == 0 or not (self.mixup or self.cutmix), "batch-size",
                "mixup/cutmix pair the images of a batch, so it must be even", self.batch_size)
        require(self.lr is None or self.lr > 0, "lr", "must be > 0", self.lr)
        require(self.warmup_epochs >= 0, "warmup-epochs", "must be >= 0", self.warmup_epochs)
        if self.resolution is not None:
            check_resolution("resolution", self.resolution)
        require(self.mixup >= 0, "mixup", "must be >= 0 (0 disables)", self.mixup)
        require(self.cutmix >= 0, "cutmix", "must be >= 0 (0 disables)", self.cutmix)
        require(self.drop_path is None or 0 <= self.drop_path < 1, "drop-path", "must be in [0, 1)", self.drop_path)
        require(0 <= self.ema_decay < 1, "ema-decay", "must be in [0, 1) (0 disables)", self.ema_decay)
        require(self.workers >= 0, "workers", "must be >= 0", self.workers)

    @property
    def scaled_lr(self) -> float:
        return self.lr if self.lr is not None else BASE_LR * self.batch_size / BASE_LR_BATCH


def check_cache_dir(path: str) -> None:
    """Refuse a cache folder that cannot be one (a file) or cannot be written where it does not exist yet."""
    folder = Path(path)
    require(folder.is_dir() or not folder.exists(), "cache-dir", "must be a folder (or not exist yet)", path)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    require(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK), "cache-dir", f"cannot be written ({existing} is not writable)", path)


def cifar_root(data_dir: str | None) -> Path:
    """Where CIFAR's extracted folders are looked for: --data-dir, else ./data."""
    return Path(data_dir or "data").expanduser()


def check_data(name: str, data_dir: str | None = None) -> None:
    """Refuse data that cannot load (unknown name, missing CIFAR files, a malformed ImageFolder), in one line."""
    if name in SMALL_DATASETS:
        return
    if name in CIFAR_FOLDERS:
        root = cifar_root(data_dir)
        if not (root / CIFAR_FOLDERS[name]).is_dir():
            raise ConvspaceError(f"data: {name} not found: put the extracted python version ({CIFAR_FOLDERS[name]}/) "
                                 f"under {root} or pass --data-dir")
        return
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConvspaceError(f"data: {name!r} is neither a dataset ({', '.join(DATASETS[:-1])}) nor an existing folder")
    classes = {}
    for split in ("train", "val"):
        if not (path / split).is_dir():
            raise ConvspaceError(f"data: {path} needs {split}/ with one folder per class (ImageFolder layout)")
        classes[split] = {p.name for p in (path / split).iterdir() if p.is_dir()}
    if len(classes["train"]) < 2:  # one class "trains" to accuracy 1.0: every trial would score perfectly and mean nothing
        found = f" ({', '.join(sorted(classes['train']))})" if classes["train"] else ""
        raise ConvspaceError(f"data: {path}/train holds {len(classes['train'])} class folder{'' if len(classes['train']) == 1 else 's'}{found}: "
                             "a classifier needs at least two")
    if classes["train"] != classes["val"]:  # labels are folder indices: they would silently mean different classes
        only_in_one = sorted(classes["train"] ^ classes["val"])
        raise ConvspaceError(f"data: {path}/train and val/ must hold the same class folders (only in one: {', '.join(only_in_one[:5])})")
