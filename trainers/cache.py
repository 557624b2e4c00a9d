"""Decode once: a dataset's images at the proxy resolution, as uint8 arrays on disk that every trial memory-maps.

Decoding every image through PIL in every trial, every epoch, made the proxy input-bound on anything but digits. NAS
work proxies ImageNet with a downsampled copy decoded once (Chrabaszcz et al. 2017); here one cache folder per source
and resolution holds `<split>_images.npy` (N, 3, R, R) uint8, `<split>_labels.npy` and `meta.json`. Its name carries a
hash of the source's fingerprint (its files with sizes and mtimes), so a changed source is a new folder. A build writes
into a temporary folder that is renamed into place when complete: a build killed halfway is never read, and two
processes building the same cache at once leave one whole copy.

A cache is checked each time it is opened: meta.json records every array's size and a checksum of its first and last
MiB, so a truncated or overwritten array, or a folder without its meta.json, is rebuilt (with one warning line) rather
than memory-mapped into a crash. A build checks the free space first and writes with plain file writes: a disk that
fills is an OSError (one line, the temporary folder removed), where a memory-mapped write would die of SIGBUS.

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
import sys
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from space.errors import ConvspaceError

# Bump when the layout or the decoding changes: caches of the old format are then rebuilt, never misread.
# 2: meta.json records each array's size and checksum; 16-bit, float, alpha and palette images are converted faithfully.
FORMAT = 2
SPLITS = ("train", "val")
ARRAYS = tuple(f"{split}_{kind}.npy" for split in SPLITS for kind in ("images", "labels"))
BLOCK = 2048  # images decoded per block: bounds the decoded images held at once, and paces the progress bar
CHECKED_BYTES = 1 << 20  # the checksum covers this much at each end of an array: a truncation or a header overwritten
SLACK_BYTES = 1 << 20  # free space wanted beyond the arrays (meta.json, the file system's own blocks)
BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


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
    """The cache of `source` at `resolution`, built first if it is missing or damaged (a progress bar shows the build)."""
    folder = cache_folder(Path(root), source, resolution)
    if os.path.lexists(folder):
        reason = damage(folder)
        if reason is not None:  # never memory-map it: a short file is a crash on every later run
            print(f"warning: cache {folder} is damaged ({reason}): rebuilding it", file=sys.stderr)
            discard(folder)
    if not os.path.lexists(folder):  # only a complete build is ever renamed into place
        build(folder, source, resolution, progress=progress)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        # Copy-on-write maps: the file is opened read-only and its pages are shared by every trial on the machine (N
        # trials hold one copy); unlike mode "r", torch.from_numpy takes them as they are, without a warning about writes.
        images = {s: np.load(folder / f"{s}_images.npy", mmap_mode="c") for s in SPLITS}
        labels = {s: np.load(folder / f"{s}_labels.npy") for s in SPLITS}
    except (OSError, ValueError) as exc:  # checked above: only a change by another process since then reaches here
        raise ConvspaceError(f"cache: {folder} cannot be read ({_reason(exc)}): remove it and run again") from None
    return Cached(images, labels, meta["classes"], folder)


def damage(folder: Path) -> str | None:
    """Why the cache in `folder` cannot be trusted (a few words), or None when its files are the ones its build wrote."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        return "no meta.json"
    except (OSError, ValueError) as exc:
        return f"meta.json unreadable: {_reason(exc)}"
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or set(files) != set(ARRAYS) or meta.get("format") != FORMAT or not isinstance(meta.get("classes"), list):
        return "meta.json does not describe its arrays"
    for name in ARRAYS:
        try:
            found = fingerprint(folder / name)
        except FileNotFoundError:
            return f"{name} is missing"
        except OSError as exc:
            return f"{name} unreadable: {_reason(exc)}"
        if found["bytes"] != files[name].get("bytes"):
            return f"{name} has {found['bytes']} bytes, {files[name].get('bytes')} written"
        if found["crc32"] != files[name].get("crc32"):
            return f"{name} is not what was written (checksum)"
    return None


def fingerprint(path: Path) -> dict[str, int]:
    """A file's size and the CRC-32 of its first and last MiB: cheap (two reads) yet it sees a truncation, a file
    cut and padded again, or a header overwritten."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        crc = zlib.crc32(f.read(CHECKED_BYTES))
        if size > CHECKED_BYTES:
            f.seek(max(CHECKED_BYTES, size - CHECKED_BYTES))
            crc = zlib.crc32(f.read(CHECKED_BYTES), crc)
    return {"bytes": size, "crc32": crc}


def discard(folder: Path) -> None:
    """Remove a damaged cache: renamed aside first (atomic), so a reader never opens it half-deleted."""
    aside = folder.parent / f".damaged-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, aside)
    except FileNotFoundError:  # another process discarded it first
        return
    except OSError as exc:
        raise ConvspaceError(f"cache: {folder} is damaged and cannot be removed ({_reason(exc)}): remove it by hand") from None
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def build(folder: Path, source: Source, resolution: int, *, progress: bool = True) -> None:
    """Decode `source` into `folder`: in a temporary folder first, renamed into place when complete. Whatever fails
    (a full disk, an unwritable folder, an image that does not decode) leaves nothing behind and is one ConvspaceError."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(folder)
        temp = folder.parent / f".building-{folder.name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
    except OSError as exc:
        raise ConvspaceError(f"cache: cannot create a cache in {folder.parent} ({_reason(exc)}): pass --cache-dir") from None
    try:
        splits, classes = source.load()
        check_free_space(temp, sum(array_bytes(len(splits[s][0]), resolution) for s in SPLITS), f"{source.name} at {resolution}px")
        with _progress(progress) as bar, bombs_refused():
            for split in SPLITS:
                items, labels = splits[split]
                task = bar.add_task(f"decoding {source.name} {split} at {resolution}px", total=len(items)) if bar else None
                blocks = decode_blocks(items, source.open_image, resolution, on_block=functools.partial(bar.advance, task) if bar else None)
                write_npy(temp / f"{split}_images.npy", (len(items), 3, resolution, resolution), np.uint8, blocks)
                write_npy(temp / f"{split}_labels.npy", (len(labels),), np.int64, [np.asarray(labels, dtype=np.int64)])
        meta = {"format": FORMAT, "resolution": resolution, "classes": classes, "sizes": {s: len(splits[s][0]) for s in SPLITS},
                "source": source.fingerprint, "files": {name: fingerprint(temp / name) for name in ARRAYS}}
        with open(temp / "meta.json", "w") as f:
            f.write(json.dumps(meta))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(temp, folder)  # atomic: readers see no folder or a whole one
        except OSError:  # another process renamed its whole copy into place first (rename onto a non-empty folder fails)
            if damage(folder) is not None:
                raise
    except OSError as exc:
        raise ConvspaceError(f"cache: building {folder.name} in {folder.parent} failed ({_reason(exc)}); nothing was kept") from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    remove_stale(folder)


def array_bytes(count: int, resolution: int) -> int:
    """The bytes a split takes on disk: its images (N, 3, R, R) uint8 and labels int64, each with a .npy header."""
    return 2 * 128 + count * (3 * resolution * resolution + 8)


def check_free_space(folder: Path, need: int, what: str) -> None:
    """Refuse a build that cannot fit, before decoding anything (a full disk would stop it hours in)."""
    free = shutil.disk_usage(folder).free
    if free < need + SLACK_BYTES:
        raise ConvspaceError(f"cache: {folder.parent} has {_size(free)} free, the cache of {what} needs {_size(need + SLACK_BYTES)}: "
                             "free some space or pass --cache-dir on another disk")


def write_npy(path: Path, shape: tuple[int, ...], dtype: type, blocks: Iterable[np.ndarray]) -> None:
    """A .npy file of `shape` and `dtype` from consecutive blocks, with plain writes then fsync: a full disk is an
    OSError here, where a memory-mapped file would have died of SIGBUS on the page it could not back."""
    written = 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
        for block in blocks:
            f.write(np.ascontiguousarray(block, dtype=dtype).data)
            written += len(block)
        f.flush()
        os.fsync(f.fileno())
    if written != shape[0]:
        raise ValueError(f"{path.name}: {written} rows written, {shape[0]} expected")


def decode_blocks(items: Sequence[Any], open_image: Callable[[Any], Image.Image], resolution: int,
                  on_block: Callable[[int], Any] | None = None) -> Iterator[np.ndarray]:
    """The items decoded as blocks of (n, 3, R, R) uint8, with a thread per CPU.

    Threads, not processes: Pillow releases the GIL while it decodes and resizes, and threads need neither pickling nor
    worker processes that re-import the command (the search's driver builds the cache)."""
    def one(item: Any) -> np.ndarray:
        try:
            return decode(open_image(item), resolution)
        except BOMB_ERRORS as exc:  # e.g. a tiny PNG that declares 50,000 x 50,000 pixels
            raise ConvspaceError(f"data: refused {item}: {exc}") from None
        except (OSError, ValueError) as exc:  # a truncated or foreign file: name it (PIL's errors say only what failed)
            raise ConvspaceError(f"data: cannot decode {item}: {exc}") from None

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, len(items), BLOCK):
            block = items[start:start + BLOCK]
            out = np.empty((len(block), 3, resolution, resolution), dtype=np.uint8)
            for i, image in enumerate(pool.map(one, block)):
                out[i] = image
            yield out
            if on_block:
                on_block(len(block))


@contextlib.contextmanager
def bombs_refused() -> Iterator[None]:
    """PIL's decompression-bomb warning (an image over Image.MAX_IMAGE_PIXELS) raised as an error, like its twice-larger
    DecompressionBombError. Enter it in the thread that starts the decoding threads: warning filters are process-wide."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def decode(image: Image.Image, resolution: int) -> np.ndarray:
    """One image as (3, R, R) uint8: the shorter side resized to R (bilinear, antialiased), then the centre R x R, as
    torchvision's Resize(R) + CenterCrop(R) did in the proxy before."""
    with image:
        fitted = ImageOps.fit(to_rgb(image), (resolution, resolution), Image.Resampling.BILINEAR)
    return np.asarray(fitted).transpose(2, 0, 1)


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as a new 8-bit RGB image that means what the file means; a ValueError for one that has no such reading.

    PIL's own convert("RGB") clips 16-bit grey to 255 (nearly all white) and float to 0 or 1 (all black). Here 16-bit
    (and 32-bit integer within 0..65535) grey is scaled by 255/65535; float grey in [0, 1] by 255, other floats
    stretched from their min..max; alpha (RGBA, LA, PA, a palette with a transparent colour) is composited over white,
    as a viewer shows it (a black drawing on a transparent ground stays visible); palette, CMYK, YCbCr, LAB, HSV and
    1-bit images go through PIL's conversions, which are faithful for them."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"32-bit integer pixels from {values.min()} to {values.max()} have no known range (16-bit expected)")
        return _grey(values.astype(np.float64) * (255 / 65535))
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("float pixels include NaN or infinity")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if 0 <= low and high <= 1:
            return _grey(values * 255)
        if high > low:
            return _grey((values - low) / (high - low) * 255)
        return _grey(np.clip(values, 0, 1) * 255)  # one flat value outside [0, 1]: no range to stretch
    if mode in ("RGBA", "LA", "PA", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise ValueError(f"images of mode {mode!r} are not supported: save it as RGB") from None


def open_rgb(path: str) -> Image.Image:
    """An image file as 8-bit RGB (`to_rgb`), a decompression bomb or an unreadable file refused in one line naming it.

    For loaders that open one file at a time in their thread (torchvision's ImageFolder in full training)."""
    with bombs_refused():
        try:
            with Image.open(path) as image:
                return to_rgb(image)
        except BOMB_ERRORS as exc:
            raise ConvspaceError(f"data: refused {path}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise ConvspaceError(f"data: cannot decode {path}: {exc}") from None


def _grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L").convert("RGB")


def remove_orphans(folder: Path) -> None:
    """Delete temporary folders of builds of `folder` that died on this machine (their process is gone), and damaged
    copies set aside by a `discard` that was killed before it deleted them."""
    for aside in folder.parent.glob(f".damaged-{folder.name}-*"):
        shutil.rmtree(aside, ignore_errors=True)
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


def _reason(exc: Exception) -> str:
    """An OSError as 'No space left on device: path', anything else as its message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


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
