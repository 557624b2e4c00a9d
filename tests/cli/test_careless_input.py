"""Careless input (issue 23): each refused in one line with exit 2, before torch, Ray or timm is imported, writing nothing.

All cases run in one subprocess (through `cli.main`, as the console command does) so that the suite pays one start-up,
and that process then says whether any heavy library was imported along the way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "study with a path": (["search", "--budget", "1G", "--study", "../etc/evil"], "error: study: '../etc/evil' is not a study name"),
    "study with a space and a slash": (["search", "--budget", "1G", "--study", "my study/v2"], "error: study: 'my study/v2' is not a study name"),
    "empty study": (["pareto", "--study", ""], "error: study: '' is not a study name"),
    "study with a newline": (["pareto", "--study", "a\nb"], "error: study: 'a\\nb' is not a study name"),
    "300-character study": (["pareto", "--study", "x" * 300], "error: study: 'xxxx"),
    "folder that does not exist": (["search", "--budget", "1G", "--storage", "sqlite:////nonexistent/dir/x.db"],
                                   "error: storage: the folder '/nonexistent/dir' of 'sqlite:////nonexistent/dir/x.db' does not exist"),
    "/proc": (["search", "--budget", "1G", "--storage", "sqlite:////proc/x.db"], "error: storage: 'sqlite:////proc/x.db' cannot be made"),
    "in-memory SQLite": (["search", "--budget", "1G", "--storage", "sqlite://"], "error: storage: 'sqlite://' is an in-memory SQLite database"),
    "bare budget": (["search", "--budget", "4.5"], "error: budget: '4.5' has no unit and would mean 4 FLOPs; did you mean 4.5GFLOPs"),
    "infinite budget": (["search", "--budget", "1e400"], "error: budget: '1e400' is beyond any network"),
    "infinite flops-min": (["search", "--budget", "1G", "--flops-min", "1e400"], "error: flops-min: '1e400' is beyond any network"),
    "negative seed": (["search", "--budget", "1G", "--seed", "-1"], "error: seed: must be in 0..4294967295, got -1"),
    "huge seed": (["search", "--budget", "1G", "--seed", str(2**64 + 1)], "error: seed: must be in 0..4294967295"),
    "absurd resolution": (["search", "--budget", "1G", "--resolution", "100000"], "error: resolution: must be <= 4096, got 100000"),
    "infinite learning rate": (["search", "--budget", "1G", "--lr", "inf"], "error: lr: must be in (0, 1]"),
    "huge learning rate": (["search", "--budget", "1G", "--lr", "1e6"], "error: lr: must be in (0, 1]"),
    "infinite CPUs": (["search", "--budget", "1G", "--cpus-per-trial", "inf"], "error: cpus-per-trial: must be a number >= 0.1, got inf"),
    "a sliver of a CPU": (["search", "--budget", "1G", "--cpus-per-trial", "0.001"], "error: cpus-per-trial: must be a number >= 0.1"),
    "more CPUs than the machine": (["search", "--budget", "1G", "--cpus-per-trial", "4096"], "error: cpus-per-trial: must be <= "),
    # the run below sees one GPU ($CUDA_VISIBLE_DEVICES=0, as Ray counts them), whatever this machine has
    "more GPUs than the machine": (["search", "--budget", "1G", "--gpus-per-trial", "2"],
                                   "error: gpus-per-trial: must be <= 1, the GPUs of this machine (a trial asking for more never starts), got 2"),
    "dashboard port beyond 65535": (["dashboard", "--port", "99999"],
                                    "error: port: must be in 1..65535 (or 0: a free port the system picks), got 99999"),
    # timm's registry read from its source: `is_model` would import torch first (7 s on a loaded box)
    "binary study file": (["ablation", sys.executable], f"error: study file: {sys.executable} is not a UTF-8 text file"),
    "mistyped model": (["train", "--model", "convnext_tny"], "error: model: 'convnext_tny' is not a registered model (did you mean convnext_tiny,"),
}

SCRIPT = """
import contextlib, io, json, os, sys
sys.argv = ["cli.py"]
import cli
out = {}
for name, args in json.loads(sys.argv_cases).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        sys.argv = ["cli.py", *args]
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    out[name] = [code, err.getvalue()]
out["heavy"] = sorted(m for m in ("torch", "ray", "timm") if m in sys.modules)
print(json.dumps(out))
"""


def test_careless_input_is_refused_in_one_line_before_any_heavy_import_and_writes_nothing(tmp_path):
    script = SCRIPT.replace("sys.argv_cases", repr(json.dumps({k: v[0] for k, v in CASES.items()})))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for name, (_, message) in CASES.items():
        code, err = out[name]
        assert code == 2 and err.startswith(message) and err.count("\n") == 1, (name, code, err)
    assert out["heavy"] == []  # refused before torch, Ray or timm was imported
    assert list(tmp_path.iterdir()) == []  # no studies/ folder, no ./etc/evil.db, no 'my study' folder
