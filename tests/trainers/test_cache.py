"""The decode-once cache: built once, reused untouched, rebuilt for a changed source, never read half-written."""

import os
import re
import shutil
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


# Faults (issue 23): a damaged cache is rebuilt with one warning line, a build that cannot finish is one error line and
# leaves nothing behind.

def _truncate(folder):
    path = folder / "train_images.npy"
    os.truncate(path, path.stat().st_size // 2)


def _overwrite_header(folder):
    with open(folder / "val_images.npy", "r+b") as f:  # same size, other bytes: only the checksum sees it
        f.seek(10)
        f.write(b"X")


@pytest.mark.parametrize("damage, reason", [
    (_truncate, r"train_images\.npy has \d+ bytes, \d+ written"),
    (lambda folder: (folder / "meta.json").unlink(), r"no meta\.json"),
    (lambda folder: (folder / "meta.json").write_text('{"format": 2, "cla'), r"meta\.json unreadable: Unterminated string .*"),
    (lambda folder: (folder / "val_labels.npy").unlink(), r"val_labels\.npy is missing"),
    (_overwrite_header, r"val_images\.npy is not what was written \(checksum\)"),
])
def test_a_damaged_cache_is_rebuilt_with_one_warning_line(tmp_path, capfd, damage, reason):
    folder = open_cache(tmp_path, slow_source(40, 0), 8, progress=False).folder
    damage(folder)
    capfd.readouterr()
    again = open_cache(tmp_path, slow_source(40, 0), 8, progress=False)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and re.fullmatch(rf"warning: cache {re.escape(str(folder))} is damaged \({reason}\): rebuilding it\n", err)
    assert again.folder == folder and [p.name for p in tmp_path.iterdir()] == [folder.name]  # nothing set aside is left
    assert again.images["train"][:, 0, 0, 0].tolist() == list(range(40)) and again.labels["val"].tolist() == [0] * 40
    capfd.readouterr()
    open_cache(tmp_path, slow_source(40, 0), 8, progress=False)  # whole again: opened silently
    assert capfd.readouterr().err == ""


def test_a_damaged_copy_left_aside_by_a_killed_discard_goes_with_the_next_build(tmp_path):
    folder = open_cache(tmp_path, slow_source(4, 0), 8, progress=False).folder  # nothing keeps its map: truncating it is safe
    (tmp_path / f".damaged-{folder.name}-0badc0de").mkdir()  # renamed aside, then the process was killed before deleting it
    _truncate(folder)
    open_cache(tmp_path, slow_source(4, 0), 8, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_a_cache_that_does_not_fit_is_refused_before_decoding_and_leaves_nothing(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=300_000))  # what statvfs says of a full disk
    decoded = []
    source = slow_source(40, 0)
    source = cache.Source(source.name, source.fingerprint, source.load, lambda i: decoded.append(i) or source.open_image(i))
    with pytest.raises(ConvspaceError, match=rf"^cache: {re.escape(str(tmp_path))} has 0\.3 MB free, the cache of slow at 64px needs 2\.0 MB: "
                                             "free some space or pass --cache-dir on another disk$"):
        open_cache(tmp_path, source, 64, progress=False)
    assert decoded == [] and list(tmp_path.iterdir()) == []


_BUILD_AND_REPORT = """
import sys; sys.path.insert(0, {root!r})
from space.errors import ConvspaceError
from tests.trainers.cache_sources import slow_source
from trainers.cache import open_cache

def build(folder):
    try:
        open_cache(folder, slow_source(100, 0), 32, progress=False)  # 2 x 307 kB of images
    except ConvspaceError as exc:  # as cli.py reports it
        print(f"error: {{exc}}", file=sys.stderr)
        return 2
    return 0
"""


def test_a_write_the_file_system_refuses_mid_build_is_one_line_and_leaves_nothing(tmp_path):
    # A real fault from the kernel: a file-size limit makes the write past 100 kB fail (EFBIG), as a full disk would (ENOSPC).
    script = _BUILD_AND_REPORT.format(root=str(ROOT)) + textwrap.dedent(f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process; ignored, the write fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        sys.exit(build({str(tmp_path)!r}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert re.fullmatch(r"error: cache: building slow-32px-\w+ in \S+ failed \(File too large\); nothing was kept\n", run.stderr)
    assert list(tmp_path.iterdir()) == []  # no .building-* folder, no cache


def test_a_disk_that_fills_is_refused_up_front_or_mid_build_without_sigbus_and_leaves_nothing(tmp_path):
    # A real full disk: a 192 kB tmpfs in a private mount namespace (where unprivileged namespaces are allowed).
    mount = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f'mount -t tmpfs -o size=192k tmpfs {tmp_path} && exec "$@"', "sh"]
    if not shutil.which("unshare") or subprocess.run([*mount, "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare --user --mount) to mount a small tmpfs in")
    script = _BUILD_AND_REPORT.format(root=str(ROOT)) + textwrap.dedent(f"""
        import os, shutil
        first = build({str(tmp_path)!r})  # the free-space check sees the disk cannot hold it
        left = os.listdir({str(tmp_path)!r})
        real = shutil.disk_usage  # then as if the space went after the check (another writer): the writes meet the full disk
        shutil.disk_usage = lambda path: real(path)._replace(free=1 << 40)
        second = build({str(tmp_path)!r})
        print(first, left, second, os.listdir({str(tmp_path)!r}))
        sys.exit(second)
    """)
    run = subprocess.run([*mount, sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr  # a memory-mapped write would have died of SIGBUS here (-7)
    assert run.stdout == "2 [] 2 []\n"  # both refused, neither left a file behind
    checked, filled = run.stderr.splitlines()
    assert re.fullmatch(rf"error: cache: {re.escape(str(tmp_path))} has 0\.2 MB free, the cache of slow at 32px needs 1\.7 MB: .*", checked)
    assert re.fullmatch(r"error: cache: building slow-32px-\w+ in \S+ failed \(No space left on device\); nothing was kept", filled)
