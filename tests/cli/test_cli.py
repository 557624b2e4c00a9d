"""The CLI as a user runs it: a subprocess, JSON out, one-line errors with exit 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args, check=True):
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_presets_json_lists_every_preset_with_exact_cost():
    from space.cost import arch_cost
    from space.presets import PRESETS

    rows = json.loads(run("presets", "--json").stdout)
    assert [r["name"] for r in rows] == list(PRESETS)
    tiny = next(r for r in rows if r["name"] == "convnext_tiny")
    assert (tiny["params"], tiny["flops"]) == (arch_cost(PRESETS["convnext_tiny"]).params, 4470437376)


def test_inspect_verify_adds_the_fvcore_and_torch_counts(tmp_path):
    from tests.conftest import tiny_config

    path = tmp_path / "net.yaml"
    path.write_text(tiny_config().to_yaml())
    report = json.loads(run("inspect", str(path), "--json", "--verify", "--resolution", "64").stdout)
    assert report["flops"] == report["flops_fvcore"] and report["params"] == report["params_torch"]
    assert isinstance(report["flops"], int) and report["resolution"] == 64


def test_sample_is_seeded_and_respects_the_budget():
    first = json.loads(run("sample", "-n", "4", "--seed", "3", "--budget", "1G", "--json").stdout)
    again = json.loads(run("sample", "-n", "4", "--seed", "3", "--budget", "1G", "--json").stdout)
    assert [r["hash"] for r in first] == [r["hash"] for r in again]
    assert len(first) == 4 and all(r["flops"] <= 1e9 for r in first)


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--budget", "4.5GB"], "error: budget: cannot read '4.5GB'"),
        (["sample", "--space", "missing.yaml"], "error: space: no file 'missing.yaml'"),
        (["inspect", "resnet51"], "error: model: 'resnet51' is neither a preset"),
        (["inspect", "convnext_tiny", "--resolution", "8"], "error: resolution: must be >= 32"),
        (["search", "--budget", "1G", "--cache-dir", "README.md"], "error: cache-dir: must be a folder (or not exist yet)"),
        # the command line itself, checked by typer before any command runs
        (["search"], "error: Missing option '--budget'. (see `cli.py search --help`)"),
        (["sample", "-n", "0"], "error: Invalid value for '-n'"),
        (["presets", "--resolution", "x"], "error: Invalid value for '--resolution'"),
        (["presets", "--colour"], "error: No such option: --colour"),
        (["serach"], "error: No such command 'serach'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message):
    result = run(*args, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message)


def test_bare_command_prints_the_help():
    result = run(check=False)
    assert result.returncode == 2 and "search" in result.stdout + result.stderr and "error" not in result.stderr


def test_invalid_space_file_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "space/spaces/default.yaml").read_text().replace("kernel: {int: [3, 21]", "kernel: {int: [4, 22]"))
    result = run("sample", "--space", str(bad), check=False)
    assert result.returncode == 2 and "kernel" in result.stderr and "Traceback" not in result.stderr
