"""`python -m nas.export.timm_script SCRIPT ...` runs a timm script (train.py, validate.py, ...) that sees our entries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.export.zoo import write_entry
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]

PROBE = """\
import sys
import timm
import helper  # beside the script: its folder is on the import path, as with `python probe.py`

model = timm.create_model(sys.argv[1], num_classes=int(sys.argv[2]), drop_rate=0.0, global_pool="avg")
print(__name__, type(model).__name__, model.num_classes, timm.models.is_model("convspace_resnet50"), helper.VALUE)
sys.exit(3)
"""


def run(cwd: Path, zoo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVSPACE_ZOO": str(zoo), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "nas.export.timm_script", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def zoo(tmp_path: Path) -> Path:
    """A zoo folder outside the project holding one exported entry, `script_net`."""
    folder = tmp_path / "zoo"
    write_entry("script_net", tiny_config(), folder, {"study": "s", "trial": 0, "resolution": 32})
    return folder


def test_script_runs_as_main_with_the_zoo_registered(tmp_path, zoo):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "probe.py").write_text(PROBE)
    (scripts / "helper.py").write_text("VALUE = 'helper-imported'\n")
    result = run(tmp_path, zoo, str(scripts / "probe.py"), "script_net", "7")
    assert result.returncode == 3, result.stderr  # the script's own exit status
    assert result.stdout.split() == ["__main__", "ConvSpaceNet", "7", "True", "helper-imported"]


def test_missing_script_is_refused_in_one_line(tmp_path, zoo):
    result = run(tmp_path, zoo, "no_such_train.py", "--model", "script_net")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "error: script: no such file, got 'no_such_train.py'"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TIMM_SCRIPTS"), reason="$TIMM_SCRIPTS: a folder with timm's train.py and validate.py")
def test_timm_train_and_validate_scripts_on_an_exported_entry(tmp_path, zoo):
    """timm's own train.py (one epoch, grad checkpointing, layer decay) then validate.py on its checkpoint."""
    from PIL import Image

    scripts = Path(os.environ["TIMM_SCRIPTS"])
    for split in ("train", "validation"):
        for label, shade in (("dark", 40), ("bright", 210)):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (32, 32), (shade + i, shade, shade - i)).save(folder / f"{i}.png")
    common = ["--model", "script_net", "--num-classes", "2", "--img-size", "32", "--device", "cpu", "--workers", "0", "-b", "4"]
    train = run(tmp_path, zoo, str(scripts / "train.py"), "data", *common, "--epochs", "1", "--warmup-epochs", "0",
                "--grad-checkpointing", "--layer-decay", "0.8", "--output", "runs", "--experiment", "e")
    assert train.returncode == 0, train.stderr[-3000:]
    assert "Model script_net created" in train.stdout + train.stderr
    checkpoint = tmp_path / "runs" / "e" / "last.pth.tar"
    validate = run(tmp_path, zoo, str(scripts / "validate.py"), "data", *common, "--checkpoint", str(checkpoint))
    assert validate.returncode == 0, validate.stderr[-3000:]
    assert '"model": "script_net"' in validate.stdout
