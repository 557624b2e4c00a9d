"""Careless input told before anything starts (issue 23): a study resumed with other settings is a short list in GFLOPs and
plain values that fits the terminal; GPUs per trial are checked against this machine's without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nas.engine import settings as settings_module
from nas.engine.settings import check_trial_resources, local_gpus
from space.errors import ConvspaceError

ROOT = Path(__file__).resolve().parents[2]


def test_resuming_with_other_settings_is_a_few_lines_in_gflops_that_fit_the_terminal(tmp_path):
    from nas.engine.search import open_search_study
    from nas.engine.settings import SearchSettings
    from space.choices import Space
    from trainers.settings import ProxySettings

    made = SearchSettings(study="s", budget=4_500_000_000, space=Space.from_yaml("default"), storage=f"sqlite:///{tmp_path}/studies/s.db",
                          proxy=ProxySettings(epochs=3))
    open_search_study(made)
    # another space (all of its dimensions differ), budget, epochs and learning rate: before, one line of 3,673 characters
    run = subprocess.run([sys.executable, str(ROOT / "cli.py"), "search", "--study", "s", "--space", "convnext", "--budget", "2G",
                          "--epochs", "5", "--lr", "0.01"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "100"})
    lines = run.stderr.splitlines()
    assert run.returncode == 2 and run.stdout == "", run.stderr
    assert lines[0] == "error: study: 's' was made with other settings (use them, or pick a new --study name):"
    assert lines[1] == "  budget: 4.5 GFLOPs in the study, 2 GFLOPs now"
    assert lines[2] == "  proxy.epochs: 3 in the study, 5 now"
    assert lines[3].startswith("  and 4 more: proxy.lr, space, space dimensions, space scale")
    assert len(lines) == 4 and all(len(line) < 100 for line in lines)
    # the terminal's width decides: at 60 columns the same lines are cut to fit
    narrow = subprocess.run([sys.executable, str(ROOT / "cli.py"), "search", "--study", "s", "--budget", "2G"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "60"})
    assert narrow.returncode == 2 and all(len(line) < 60 for line in narrow.stderr.splitlines()), narrow.stderr
    assert "  budget: 4.5 GFLOPs in the study, 2 GFLOPs now" in narrow.stderr.splitlines()


@pytest.fixture
def no_gpu_driver(monkeypatch, tmp_path):
    """No $CUDA_VISIBLE_DEVICES, no NVIDIA driver folder, no nvidia-smi, no other vendor's device: what the test sets up."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(settings_module, "NVIDIA_GPUS", tmp_path / "no-driver")
    monkeypatch.setattr(settings_module, "OTHER_GPU_DEVICES", ())
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def test_local_gpus_are_counted_as_ray_counts_them_without_torch(no_gpu_driver, monkeypatch):
    assert local_gpus() == 0
    with pytest.raises(ConvspaceError, match="gpus-per-trial: this machine has no GPU: leave it out to train on CPUs"):
        check_trial_resources(1.0, 0.5, None)
    check_trial_resources(1.0, 4, "10.0.0.1:6379")  # a cluster's GPUs are Ray's to count, once it is joined
    # nvidia-smi on PATH (no /proc folder: e.g. in a container)
    smi = no_gpu_driver / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-1)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-2)'\n")
    smi.chmod(0o755)
    assert local_gpus() == 2
    # NVIDIA's driver folder: one entry per GPU
    (no_gpu_driver / "no-driver").mkdir()
    for bus in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (no_gpu_driver / "no-driver" / bus).mkdir()
    assert local_gpus() == 3
    # $CUDA_VISIBLE_DEVICES, when set, is what Ray (and CUDA) see: up to the first entry that names no device
    for visible, count in (("", 0), ("-1", 0), ("1", 1), ("0,1", 2), ("0,-1,1", 1)):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert local_gpus() == count, visible
    with pytest.raises(ConvspaceError, match=r"^gpus-per-trial: must be <= 1, the GPUs of this machine .* got 2$"):
        check_trial_resources(1.0, 2, None)
    check_trial_resources(1.0, 0.25, None)
