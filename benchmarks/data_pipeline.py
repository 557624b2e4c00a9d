"""Images per second served to the proxy's training loop: the decode-once cache vs torchvision's ImageFolder + DataLoader.

On the same ImageFolder (by default scikit-learn's digits written as 64x64 PNGs into a temporary folder), in one run:
- the cache's build time (decoded once, a thread per CPU);
- images/s of each path with nothing else running: the old proxy path (ImageFolder, Resize + CenterCrop + ToTensor +
  Normalize, DataLoader without workers, as trainers/proxy.py read every epoch before) and the new one (trainers.batches
  over the memory-mapped cache, with random crops and flips), both on one CPU thread;
- the share of a proxy epoch spent waiting for data with each, training a small ConvNeXt (the proxy's own step: AdamW,
  label smoothing) on those batches.

Usage: python benchmarks/data_pipeline.py [--data IMAGEFOLDER] [--resolution 32] [--images 3000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

warnings.filterwarnings("ignore")


def digits_folder(root: Path, size: int) -> Path:
    """scikit-learn's 1,797 digits as size x size PNGs in an ImageFolder tree (train/ 80%, val/ 20%)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / ("val" if i % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray((image.reshape(8, 8) * 255 / 16).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
        grey.convert("RGB").save(folder / f"{i}.png")
    return root


class Timed:
    """Iterates `batches`, adding the seconds spent waiting for each batch to `waited`."""

    def __init__(self, batches: Iterable) -> None:
        self.batches, self.waited = batches, 0.0

    def __iter__(self) -> Iterator:
        it = iter(self.batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.waited += time.perf_counter() - started
            yield batch


def serve_rate(make_epoch, images: int) -> tuple[float, float]:
    """Images per CPU second and per wall second of batches drawn from fresh epochs until `images` have been served
    (nothing else running). Per CPU second is what one core gives where other jobs share the machine; both run in
    this process (no DataLoader workers), so CPU time counts all their work."""
    served, started, cpu = 0, time.perf_counter(), time.process_time()
    while served < images:
        for x, _ in make_epoch():
            served += len(x)
            if served >= images:
                break
    return served / (time.process_time() - cpu), served / (time.perf_counter() - started)


def epoch_wait_share(make_epoch, classes: int, steps: int) -> tuple[float, float]:
    """(share of the time waiting for data, training images/s) over `steps` proxy training steps of a small ConvNeXt."""
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    from space.network import build_network
    from space.presets import convnext

    model = build_network(convnext((1, 1, 3, 1), (16, 32, 64, 128)), num_classes=classes)
    optimizer, loss_fn = create_optimizer_v2(model, "adamw", lr=2e-3, weight_decay=0.05), LabelSmoothingCrossEntropy(0.1)
    model.train()
    done = images = 0
    waited, started = 0.0, time.perf_counter()
    while done < steps:
        timed = Timed(make_epoch())
        for x, y in timed:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done, images = done + 1, images + len(x)
            if done >= steps:
                break
        waited += timed.waited
    wall = time.perf_counter() - started
    return waited / wall, images / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", help="an ImageFolder tree (train/, val/); default: the digits as 64x64 PNGs")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--images", type=int, default=3000, help="images each path serves for its rate")
    parser.add_argument("--steps", type=int, default=30, help="training steps for each wait share")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one CPU core)")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from trainers.batches import Batches
    from trainers.data import load_data

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else digits_folder(Path(tmp) / "digits", 64)
        started = time.perf_counter()
        data = load_data(str(root), args.resolution, cache_dir=str(Path(tmp) / "cache"))
        built = time.perf_counter() - started
        started = time.perf_counter()
        load_data(str(root), args.resolution, cache_dir=str(Path(tmp) / "cache"))
        reopened = time.perf_counter() - started
        r = args.resolution
        tf = transforms.Compose([transforms.Resize(r), transforms.CenterCrop(r), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
        folder = datasets.ImageFolder(str(root / "train"), transform=tf)
        generator = torch.Generator().manual_seed(0)

        def old_epoch() -> Iterable:
            return DataLoader(folder, args.batch_size, shuffle=True, drop_last=True, generator=generator)

        batches = Batches(data.train, args.batch_size, cpu, generator=generator, drop_last=True, augment_seed=0)
        old_rate, new_rate = serve_rate(old_epoch, args.images), serve_rate(lambda: batches, max(args.images, 100_000))
        old_wait, old_train = epoch_wait_share(old_epoch, data.num_classes, args.steps)
        new_wait, new_train = epoch_wait_share(lambda: batches, data.num_classes, args.steps)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch threads {args.threads}")
    print(f"data: {args.data or 'digits as 64x64 PNGs'}: {len(data.train)} training images at {r}px, batch {args.batch_size}")
    print(f"cache: built in {built:.2f} s ({(len(data.train) + len(data.val)) / built:,.0f} images/s decoded), reopened in {reopened * 1000:.0f} ms")
    print(f"served to the loop, per CPU second: ImageFolder + DataLoader {old_rate[0]:,.0f} images/s; cache + device-side crop/flip "
          f"{new_rate[0]:,.0f} images/s: {new_rate[0] / old_rate[0]:.0f}x")
    print(f"served to the loop, per wall second: ImageFolder + DataLoader {old_rate[1]:,.0f} images/s; cache + device-side crop/flip "
          f"{new_rate[1]:,.0f} images/s: {new_rate[1] / old_rate[1]:.0f}x")
    print(f"proxy epoch waiting for data: ImageFolder + DataLoader {old_wait:.1%} ({old_train:,.0f} images/s trained); "
          f"cache {new_wait:.1%} ({new_train:,.0f} images/s trained)")


if __name__ == "__main__":
    main()
