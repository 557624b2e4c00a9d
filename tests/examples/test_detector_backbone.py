"""examples/detector_backbone.py as a user runs it: a fitted network exported, built by timm as a features_only
backbone under torchvision's FPN and FCOS, trained a few steps on synthetic boxes, then predicting."""

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_exports_trains_and_predicts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CONVSPACE_ZOO"}  # only the entry the example exports itself
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "detector_backbone.py"), "--smoke"], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # the backbone was fitted to the smoke budget (30 MFLOPs) at the detector's 64 px, the count --cost-resolution 64 makes
    gflops = float(re.search(r"([0-9.]+) GFLOPs at 64 px", out).group(1))
    assert 0 < gflops <= 0.030
    # the YOLO-style table: stem, four stages from feature_info (out = in of the next, strides 4..32), FPN on stages 1-3, head
    rows = {int(m[1]): (m[2], int(m[3]), m[4], ast.literal_eval(m[5]))
            for m in re.finditer(r"^\s*(\d+)\s+(-1|\[[\d, ]+\]|\d+)\s+(\d+)\s+(\S+(?: \S+)*?)\s{2,}(\[.*\])$", out, re.MULTILINE)}
    assert sorted(rows) == list(range(7))
    stages = [rows[i][3] for i in range(1, 5)]
    assert [s[2] for s in stages] == [4, 8, 16, 32] and all(a[1] == b[0] for a, b in zip([rows[0][3]] + stages, stages))
    assert rows[5][0] == "[2, 3, 4]" and rows[5][3] == [[s[1] for s in stages[1:]], 32] and "FeaturePyramidNetwork" in rows[5][2]
    assert "FCOSHead" in rows[6][2] and rows[6][3] == [32, 4]
    losses = re.findall(r"^step +(\d+): loss ([0-9.]+) \(classification ([0-9.]+), bbox_regression ([0-9.]+), bbox_ctrness ([0-9.]+)\)$",
                        out, re.MULTILINE)
    assert [int(s[0]) for s in losses] == [1, 2, 3] and all(math.isfinite(float(v)) for s in losses for v in s[1:])
    assert float(losses[-1][1]) < float(losses[0][1])  # three steps of AdamW on the same few images lower the loss
    boxes = [ast.literal_eval(b) for b in re.findall(r"^  predicted \w+ +(\[.*?\]) score", out, re.MULTILINE)]
    assert boxes and all(0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 for x1, y1, x2, y2 in boxes)  # eval mode: boxes in the image
