"""Decode once: a dataset's images at the proxy resolution, as uint8 arrays on disk that every trial memory-maps.

Decoding every image through PIL in every trial, every epoch, made the proxy input-bound on anything but digits. NAS
work proxies ImageNet with a downsampled copy decoded once (Chrabaszcz et al. 2017); here one cache folder per source
and resolution holds `<split>_images.npy` (N, 3, R, R) uint8, `<split>_labels.npy` and `meta.json`. Its name carries a
hash of the source's fingerprint (its files with sizes and mtimes), so a changed source is a new folder. A build writes
into a temporary folder that is renamed into place when complete: a build killed halfway is never read, and two
processes building the same cache at once leave one whole copy.

No torch here: numpy and PIL only, so the builder is cheap to start and to test in a subprocess.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from space.errors import ConvspaceError

FORMAT = 1  # bump when the layout or the decoding changes: caches of the old format are then rebuilt, never misread
SPLITS = ("train", "val")
BLOCK = 2048  # images decoded per block: bounds the decoded images held at once, and paces the progress bar


@dataclass(frozen=True)
class Source:
    """What a cache is built from: a folder-name prefix, a fingerprint that changes when the data does, and (only
    called to build) the items and labels of each split plus how to open one item as a PIL image."""

    name: str
    fingerprint: Any
    load: Callable[[], tuple[dict[str, tuple[Sequence[Any], Sequence[int]]], list[str]]]  # -> {split: (items, labels)}, classes
    open_image: Callable[[Any], Image.Image]


@dataclass(frozen=True)
class Cached:
    """An opened cache: per split the images (N, 3, R, R) uint8, memory-mapped, and the labels; the class names."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    classes: list[str]
    folder: Path


def cache_folder(root: Path, source: Source, resolution: int) -> Path:
    """The folder of `source` at `resolution` under root: named by the source, the resolution and their hash."""
    key = json.dumps({"format": FORMAT, "resolution": resolution, "source": source.fingerprint}, sort_keys=True)
    return root / f"{source.name}-{resolution}px-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def open_cache(root: Path, source: Source, resolution: int, *, progress: bool = True) -> Cached:
    """The cache of `source` at `resolution`, built first if it is missing (a progress bar shows the build)."""
    folder = cache_folder(Path(root), source, resolution)
    if not (folder / "meta.json").is_file():  # only a complete build is ever renamed into place
        build(folder, source, resolution, progress=progress)
    meta = json.loads((folder / "meta.json").read_text())
    # Copy-on-write maps: the file is opened read-only and its pages are shared by every trial on the machine (N trials
    # hold one copy); unlike mode "r", torch.from_numpy takes them as they are, without a warning about writes.
    images = {s: np.load(folder / f"{s}_images.npy", mmap_mode="c") for s in SPLITS}
    labels = {s: np.load(folder / f"{s}_labels.npy") for s in SPLITS}
    return Cached(images, labels, meta["classes"], folder)


def build(folder: Path, source: Source, resolution: int, *, progress: bool = True) -> None:
    """Decode `source` into `folder`: in a temporary folder first, renamed into place when complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(folder)
    temp = folder.parent / f".building-{folder.name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        splits, classes = source.load()
        with _progress(progress) as bar:
            for split in SPLITS:
                items, labels = splits[split]
                task = bar.add_task(f"decoding {source.name} {split} at {resolution}px", total=len(items)) if bar else None
                images = np.lib.format.open_memmap(temp / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                                   shape=(len(items), 3, resolution, resolution))
                decode_into(images, items, source.open_image, resolution, on_block=functools.partial(bar.advance, task) if bar else None)
                images.flush()
                del images
                np.save(temp / f"{split}_labels.npy", np.asarray(labels, dtype=np.int64))
        (temp / "meta.json").write_text(json.dumps({"format": FORMAT, "resolution": resolution, "classes": classes,
                                                    "sizes": {s: len(splits[s][0]) for s in SPLITS}, "source": source.fingerprint}))
        try:
            os.rename(temp, folder)  # atomic: readers see no folder or a whole one
        except OSError:  # another process renamed its whole copy into place first (rename onto a non-empty folder fails)
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    remove_stale(folder)


def decode_into(out: np.ndarray, items: Sequence[Any], open_image: Callable[[Any], Image.Image], resolution: int,
                on_block: Callable[[int], Any] | None = None) -> None:
    """Decode every item into out[i] (3, R, R) uint8, with a thread per CPU.

    Threads, not processes: Pillow releases the GIL while it decodes and resizes, and threads need neither pickling nor
    worker processes that re-import the command (the search's driver builds the cache)."""
    def one(item: Any) -> np.ndarray:
        try:
            return decode(open_image(item), resolution)
        except (OSError, ValueError) as exc:  # a truncated or foreign file: name it (PIL's errors say only what failed)
            raise ConvspaceError(f"data: cannot decode {item}: {exc}") from None

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, len(items), BLOCK):
            block = items[start:start + BLOCK]
            for i, image in enumerate(pool.map(one, block)):
                out[start + i] = image
            if on_block:
                on_block(len(block))


def decode(image: Image.Image, resolution: int) -> np.ndarray:
    """One image as (3, R, R) uint8: the shorter side resized to R (bilinear, antialiased), then the centre R x R, as
    torchvision's Resize(R) + CenterCrop(R) did in the proxy before."""
    with image:
        fitted = ImageOps.fit(image.convert("RGB"), (resolution, resolution), Image.Resampling.BILINEAR)
    return np.asarray(fitted).transpose(2, 0, 1)


def remove_orphans(folder: Path) -> None:
    """Delete temporary folders of builds of `folder` that died on this machine (their process is gone)."""
    host = socket.gethostname()
    for temp in folder.parent.glob(f".building-{folder.name}-*"):
        owner, pid, _ = temp.name.removeprefix(f".building-{folder.name}-").rsplit("-", 2)
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(temp, ignore_errors=True)


def remove_stale(folder: Path) -> None:
    """Delete caches of the same source and resolution built from an older version of it (they are never read again)."""
    prefix = folder.name.rsplit("-", 1)[0]
    for old in folder.parent.glob(f"{prefix}-*"):
        if old != folder and old.is_dir() and len(old.name) == len(folder.name):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _progress(show: bool) -> Any:
    """rich's progress bar on stderr (stdout may be a command's parsed output), or none."""
    if not show:
        return contextlib.nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True))
