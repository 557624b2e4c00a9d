"""The decode-once cache: built once, reused untouched, rebuilt for a changed source, never read half-written."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from space.errors import ConvspaceError
from tests.trainers.cache_sources import slow_source
from tests.trainers.test_data import image_tree
from trainers import cache
from trainers.cache import open_cache
from trainers.data import load_data

ROOT = Path(__file__).resolve().parents[2]


def test_an_image_folder_is_decoded_once_and_reused_untouched(tmp_path, monkeypatch):
    root = image_tree(tmp_path / "imgs", {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    first = load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    [folder] = (tmp_path / "cache").iterdir()
    files = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    monkeypatch.setattr(cache, "build", lambda *a, **k: pytest.fail("rebuilt a cache that was there"))
    again = load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()} == files
    assert torch.equal(first.train.tensors[0], again.train.tensors[0]) and again.train.tensors[1].tolist() == [0, 0, 0, 1, 1]
    images = again.train.tensors[0]
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.uint8
    assert tuple(images[4, :, 5, 5]) == (30, 200, 30)  # a dog, its flat colour decoded
    assert isinstance(np.load(folder / "train_images.npy", mmap_mode="c"), np.memmap)  # served from the file, not a copy


def test_a_changed_source_is_decoded_again_and_the_old_cache_removed(tmp_path):
    root = image_tree(tmp_path / "imgs", {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    [old] = (tmp_path / "cache").iterdir()
    Image.new("RGB", (20, 16), (9, 9, 9)).save(root / "train" / "dog" / "0.png")  # same name, new content
    os.utime(root / "train" / "dog" / "0.png", ns=(1, 1))  # a size or mtime change is what is noticed
    changed = load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    [new] = (tmp_path / "cache").iterdir()
    assert new != old and tuple(changed.train.tensors[0][2, :, 0, 0]) == (9, 9, 9)
    load_data(str(root), 48, cache_dir=str(tmp_path / "cache"))  # another resolution is another cache, beside it
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_a_build_killed_halfway_is_never_read_and_its_leftovers_go(tmp_path):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from tests.trainers.cache_sources import slow_source
        from trainers.cache import open_cache
        open_cache({str(tmp_path)!r}, slow_source(200, 0.05), 8, progress=False)
    """)
    builder = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while not list(tmp_path.glob(".building-*/train_images.npy")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(builder.pid, signal.SIGKILL)  # kill -9 while it decodes
    builder.wait()
    [leftover] = tmp_path.glob(".building-*")
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # nothing a reader would open
    cached = open_cache(tmp_path, slow_source(200, 0), 8, progress=False)  # the same source: built anew, whole
    assert cached.images["train"][:, 0, 0, 0].tolist() == list(range(200))
    assert not leftover.exists() and [p.name for p in tmp_path.iterdir()] == [cached.folder.name]


def test_two_processes_building_one_cache_at_once_leave_one_whole_copy(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(open_cache(tmp_path, slow_source(40, 0.002), 8, progress=False)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.name for p in tmp_path.iterdir()] == [results[0].folder.name]  # no temporary folder left
    assert all(r.images["val"][:, 0, 0, 0].tolist() == list(range(40)) for r in results)


def test_an_image_that_does_not_decode_is_a_one_line_error_naming_it_and_leaves_no_cache(tmp_path):
    root = image_tree(tmp_path / "imgs", {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    (root / "train" / "dog" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ConvspaceError, match=r"^data: cannot decode .*/train/dog/1\.png: cannot identify image file") as refused:
        load_data(str(root), 32, cache_dir=str(tmp_path / "cache"))
    assert "\n" not in str(refused.value) and not list((tmp_path / "cache").iterdir())
