"""Datasets: the embedded default (scikit-learn's digits), CIFAR-10/100, an ImageFolder tree, synthetic.

The proxy gets every dataset as tensors at its resolution, so that batches are slices (trainers.batches): digits and
synthetic are made in memory (a fraction of a second: no cache file), CIFAR and ImageFolders are decoded once into a
uint8 cache that every trial memory-maps (trainers.cache). Full training reads images through timm's transforms.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from space.errors import ConvspaceError
from trainers.cache import Source, open_cache, open_rgb
from trainers.settings import CIFAR_FOLDERS, DEFAULT_CACHE_DIR, check_data, cifar_root


@dataclass
class Data:
    """A train/val split with what the network needs to know about it."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int


def _as_images(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, h, w) floats in [0, 1] -> 3-channel, resized, normalised to mean 0.5 / std 0.5."""
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return ((x - 0.5) / 0.5).contiguous()


def _digits_split(seed: int, val_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """scikit-learn's 1,797 handwritten digits (8x8, in [0, 1]) and a fixed stratified split per seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    train_idx, val_idx = train_test_split(list(range(len(labels))), test_size=val_fraction, stratify=labels, random_state=seed)
    return x, torch.tensor(labels, dtype=torch.long), train_idx, val_idx


def _synthetic_split(seed: int, classes: int = 4, per_class: int = 16) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """For tests only: each class is a fixed random pattern plus noise, so a tiny net can learn it."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(classes, 1, 8, 8, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = (prototypes[y] + 0.3 * torch.rand(len(y), 1, 8, 8, generator=g)).clamp(0, 1)
    val = [i for i in range(len(y)) if i % 4 == 0]
    return x, y, [i for i in range(len(y)) if i % 4], val


_SMALL = {"digits": _digits_split, "synthetic": _synthetic_split}


def small_tensors(name: str, resolution: int, seed: int) -> Data:
    """digits or synthetic as in-memory tensors at the proxy resolution."""
    x, y, train_idx, val_idx = _SMALL[name](seed)
    x = _as_images(x, resolution)
    return Data(TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx]), int(y.max()) + 1, 3)


class ImageList(Dataset):
    """Grey [0, 1] tensors served as RGB PIL images, so timm's augmentation pipelines apply (full training)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable | None) -> None:
        self.x, self.y, self.transform = (x * 255).round().to(torch.uint8), y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.x[i, 0].numpy()).convert("RGB")
        return (self.transform(image) if self.transform else image), int(self.y[i])


def image_datasets(name: str, seed: int, data_dir: str | None, train_tf: Callable, val_tf: Callable) -> Data:
    """Datasets of images through the given transforms (full training): digits, synthetic, CIFAR, ImageFolder."""
    if name in _SMALL:
        x, y, train_idx, val_idx = _SMALL[name](seed)
        return Data(ImageList(x[train_idx], y[train_idx], train_tf), ImageList(x[val_idx], y[val_idx], val_tf), int(y.max()) + 1, 3)
    check_data(name, data_dir)
    if name in CIFAR_FOLDERS:
        return cifar(name, data_dir, train_tf, val_tf)
    return image_folder(Path(name).expanduser(), train_tf, val_tf)


def cifar(name: str, data_dir: str | None, train_tf: Callable | None, val_tf: Callable | None) -> Data:
    """CIFAR-10/100 from torchvision's files under data_dir (never downloaded at run time)."""
    from torchvision import datasets

    root = cifar_root(data_dir)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train, val = cls(str(root), train=True, transform=train_tf), cls(str(root), train=False, transform=val_tf)
    except RuntimeError:
        raise ConvspaceError(
            f"data: {name} under {root} is incomplete or corrupt: extract the python version ({CIFAR_FOLDERS[name]}/) again"
        ) from None
    return Data(train, val, len(train.classes), 3)


def image_folder(path: Path, train_tf: Callable, val_tf: Callable) -> Data:
    """An ImageFolder tree with train/ and val/ (one subfolder per class, at least two; `check_data` has seen its layout)."""
    from torchvision import datasets

    try:
        # open_rgb, not torchvision's loader: the cache's conversion (16-bit, float, alpha) and its one-line refusals
        train = datasets.ImageFolder(str(path / "train"), transform=train_tf, loader=open_rgb)
        val = datasets.ImageFolder(str(path / "val"), transform=val_tf, loader=open_rgb)
    except FileNotFoundError as exc:  # no class folders, or a class folder without images
        raise ConvspaceError(f"data: {str(exc).splitlines()[0]}") from None
    return Data(train, val, len(train.classes), 3)


def cifar_source(name: str, data_dir: str | None) -> Source:
    """CIFAR-10/100 as a cache source: its batch files (sizes and mtimes) are the fingerprint; torchvision reads them."""
    from PIL import Image

    folder = (cifar_root(data_dir) / CIFAR_FOLDERS[name]).resolve()

    def load() -> tuple[dict, list[str]]:
        splits = cifar(name, data_dir, None, None)  # torchvision's classes check the files and hold (N, 32, 32, 3) uint8
        return {"train": (splits.train.data, splits.train.targets), "val": (splits.val.data, splits.val.targets)}, list(splits.train.classes)

    return Source(f"{name}-{_short_hash(str(folder))}", {"kind": name, "path": str(folder), "files": _stats(folder, sorted(os.listdir(folder)))},
                  load, Image.fromarray)


def image_folder_source(path: Path) -> Source:
    """An ImageFolder tree as a cache source: the files torchvision's ImageFolder reads (its own listing, so the same
    files, labels and errors), with their sizes and mtimes as the fingerprint."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    path = path.expanduser().resolve()
    try:
        classes, class_to_idx = find_classes(path / "train")
        splits = {split: make_dataset(path / split, class_to_idx, IMG_EXTENSIONS) for split in ("train", "val")}
    except FileNotFoundError as exc:  # no class folders, or a class folder without images
        raise ConvspaceError(f"data: {str(exc).splitlines()[0]}") from None
    files = {split: _stats(path, [os.path.relpath(file, path) for file, _ in samples]) for split, samples in splits.items()}
    fingerprint = {"kind": "imagefolder", "path": str(path), "files": files}  # a file's class is its folder: in its name

    def load() -> tuple[dict, list[str]]:
        return {split: ([f for f, _ in samples], [label for _, label in samples]) for split, samples in splits.items()}, classes

    return Source(f"{path.name}-{_short_hash(str(path))}", fingerprint, load, Image.open)


def _stats(root: Path, names: list[str]) -> str:
    """A digest of the files' names, sizes and modification times: any change to the source changes it."""
    digest = hashlib.sha256()
    for name in names:
        stat = os.stat(root / name)
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{len(names)}:{digest.hexdigest()}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def load_data(name: str, resolution: int, seed: int = 0, data_dir: str | None = None, cache_dir: str | None = None) -> Data:
    """The proxy's data for --data as tensors at the proxy resolution: digits and synthetic made in memory (float),
    CIFAR and ImageFolders memory-mapped from the decode-once cache under cache_dir (uint8, built first if missing)."""
    if name in _SMALL:
        return small_tensors(name, resolution, seed)
    check_data(name, data_dir)
    source = cifar_source(name, data_dir) if name in CIFAR_FOLDERS else image_folder_source(Path(name))
    cached = open_cache(Path(cache_dir or DEFAULT_CACHE_DIR), source, resolution)

    def split(which: str) -> TensorDataset:
        return TensorDataset(torch.from_numpy(cached.images[which]), torch.from_numpy(cached.labels[which]))

    return Data(split("train"), split("val"), len(cached.classes), 3)
