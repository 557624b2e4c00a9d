"""The proxy's batches: slices of image tensors held once per trial, augmented batch-wise on the device.

airbench's recipe (the fastest CIFAR trainers): the images stay uint8 and are copied to the GPU once, each step
gathers its batch there and draws crops and flips for the whole batch at once; no DataLoader, no per-image Python.
On the CPU the images stay memory-mapped (trainers.cache): N trials on a machine share one copy of the pages.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import TensorDataset

from trainers.device import batch_on_device

RESIDENT_SHARE = 0.25  # a trial copies its images to the GPU when they take at most this share of its free memory


class Batches:
    """Batches of (normalised float images, labels) on the device, from a TensorDataset of uint8 or float images.

    `indices` picks a subset (the trial's training images); `generator` shuffles each epoch (else the order is kept);
    `augment_seed` turns on random crops and flips, drawn from a generator on the device seeded with it."""

    def __init__(self, dataset: TensorDataset, batch_size: int, device: torch.device, *, indices: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, drop_last: bool = False, augment_seed: int | None = None) -> None:
        images, labels = dataset.tensors
        indices = torch.arange(len(labels)) if indices is None else indices
        if device.type == "cuda" and images[:1].nbytes * len(indices) <= RESIDENT_SHARE * torch.cuda.mem_get_info(device)[0]:
            # Moved once per trial: the pinned copy lets the transfer run at full speed, then every step is a gather there.
            images = images.index_select(0, indices).pin_memory().to(device, non_blocking=True)
            labels = labels.index_select(0, indices).to(device)
            indices = torch.arange(len(indices), device=device)
        self.images, self.labels, self.indices = images, labels, indices
        self.batch_size, self.device, self.generator, self.drop_last = batch_size, device, generator, drop_last
        self.augment = torch.Generator(device=device).manual_seed(augment_seed) if augment_seed is not None else None

    def __len__(self) -> int:
        """Steps per epoch."""
        whole, rest = divmod(len(self.indices), self.batch_size)
        return whole if self.drop_last else whole + bool(rest)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(augment=self.augment is not None)

    def epoch(self, *, augment: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the images (reshuffled when there is a generator); `augment=False` serves them as they are,
        e.g. for re-estimating BatchNorm statistics of the network that is evaluated on unaugmented images."""
        order = self.indices
        if self.generator is not None:
            order = order[torch.randperm(len(order), generator=self.generator).to(order.device)]
        for step in range(len(self)):
            picked = order[step * self.batch_size:(step + 1) * self.batch_size]
            if not picked.is_cuda:  # memory-mapped rows read in file order (same images, same batch)
                picked = picked.sort().values
            # From pageable memory this copy is synchronous: only a set too big for the GPU takes this path.
            # index_select, not images[picked]: a tenth of the time on the CPU (a plain row copy, no advanced indexing)
            x = self.images.index_select(0, picked).to(self.device, non_blocking=True)
            if augment and self.augment is not None:
                x = crop_and_flip(x, *draw_crops(len(x), x.shape[-2:], self.augment))
            yield batch_on_device(normalise(x), self.labels.index_select(0, picked), self.device)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats of mean 0.5 / std 0.5 as the proxy always used; float images are normalised already."""
    return x.float().mul_(2 / 255).sub_(1) if x.dtype == torch.uint8 else x


def draw_crops(n: int, size: torch.Size, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: vertical and horizontal shifts within the padding (R/8: 4 px at 32, the CIFAR recipes'), and a flip."""
    pad = max(1, size[0] // 8)
    shifts = torch.randint(-pad, pad + 1, (2, n, 1), generator=generator, device=generator.device)
    flips = torch.randint(0, 2, (n, 1), generator=generator, device=generator.device).bool()
    return shifts[0], shifts[1], flips


def crop_and_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) shifted by (dy, dx) (N, 1) into its reflect padding, mirrored where flip (N, 1): as a random crop of
    F.pad(x, reflect) plus a horizontal flip, for every image of the batch in one gather, on any dtype.

    By hand: torchvision's RandomCrop and RandomHorizontalFlip draw one crop or flip per call, the same for a whole
    batch, so per-image crops would be a Python loop over the images. One gather over the flattened pixels costs an
    eighth of 4-d advanced indexing (measured: 0.29 vs 2.3 ms for 64 images at 32 px on one core)."""
    n, c, h, w = x.shape
    columns = torch.arange(w, device=x.device)
    rows = _reflect(torch.arange(h, device=x.device) + dy, h)  # (N, H)
    cols = _reflect(torch.where(flip, w - 1 - columns, columns) + dx, w)  # (N, W)
    pixels = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, pixels).view(n, c, h, w)


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Indices past an edge mirrored back across it, without repeating the edge (F.pad's 'reflect')."""
    return (size - 1) - ((size - 1) - i.abs()).abs()

