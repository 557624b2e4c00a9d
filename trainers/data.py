"""Datasets: the embedded default (scikit-learn's digits), CIFAR-10/100, an ImageFolder tree, synthetic.

Small datasets are held as tensors already resized to the proxy resolution: on a CPU, per-sample
decoding and augmentation would cost more than the tiny proxy networks' training steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from space.errors import ConvspaceError

DATASETS = ("digits", "cifar10", "cifar100", "synthetic", "<ImageFolder path>")


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


def digits(resolution: int, seed: int, val_fraction: float = 0.2) -> Data:
    """scikit-learn's 1,797 handwritten digits (8x8, shipped inside the package): a fixed stratified split per seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(labels, dtype=torch.long)
    train_idx, val_idx = train_test_split(range(len(y)), test_size=val_fraction, stratify=labels, random_state=seed)
    x = _as_images(x, resolution)
    return Data(TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx]), 10, 3)


def synthetic(resolution: int, seed: int, classes: int = 4, per_class: int = 16) -> Data:
    """For tests only: each class is a fixed random pattern plus noise, so a tiny net can learn it."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(classes, 1, 8, 8, generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    x = (prototypes[y] + 0.3 * torch.rand(len(y), 1, 8, 8, generator=g)).clamp(0, 1)
    x = _as_images(x, resolution)
    val = torch.arange(len(y)) % 4 == 0
    return Data(TensorDataset(x[~val], y[~val]), TensorDataset(x[val], y[val]), classes, 3)


def cifar(name: str, resolution: int, data_dir: str | None) -> Data:
    """CIFAR-10/100 from torchvision's files under data_dir (never downloaded at run time)."""
    from torchvision import datasets, transforms

    root = Path(data_dir or "data").expanduser()
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    tf = transforms.Compose([transforms.Resize(resolution), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    try:
        train, val = cls(str(root), train=True, transform=tf), cls(str(root), train=False, transform=tf)
    except RuntimeError:
        raise ConvspaceError(
            f"data: {name} not found: put the extracted python version ({folder}/) under {root} or pass --data-dir"
        ) from None
    return Data(train, val, len(train.classes), 3)


def image_folder(path: Path, resolution: int) -> Data:
    """An ImageFolder tree with train/ and val/ (one subfolder per class)."""
    from torchvision import datasets, transforms

    for split in ("train", "val"):
        if not (path / split).is_dir():
            raise ConvspaceError(f"data: {path} needs {split}/ with one folder per class (ImageFolder layout)")
    tf = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])  # fmt: skip
    train = datasets.ImageFolder(str(path / "train"), transform=tf)
    return Data(train, datasets.ImageFolder(str(path / "val"), transform=tf), len(train.classes), 3)


def load_data(name: str, resolution: int, seed: int = 0, data_dir: str | None = None) -> Data:
    """Dispatch on --data: a dataset name or an ImageFolder path."""
    if name == "digits":
        return digits(resolution, seed)
    if name == "synthetic":
        return synthetic(resolution, seed)
    if name in ("cifar10", "cifar100"):
        return cifar(name, resolution, data_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        return image_folder(path, resolution)
    raise ConvspaceError(f"data: {name!r} is neither a dataset ({', '.join(DATASETS[:-1])}) nor an existing folder")

