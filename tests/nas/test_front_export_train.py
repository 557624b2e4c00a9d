"""Looking and taking: pareto, dashboard, export to timm, full training with resume (CLI in subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import write_study

ROOT = Path(__file__).resolve().parents[2]


def cli(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A small real study written through Optuna's storage as the search writes it (no training needed here)."""
    root = tmp_path_factory.mktemp("front")
    write_study(root, "s")
    return root


def test_pareto_json_holds_only_fully_trained_non_dominated_trials(study_dir, tmp_path):
    from nas.engine.ledger import hypervolume

    out = json.loads(cli(study_dir, "pareto", "--study", "s", "--json").stdout)
    rows = out["front"]
    flops = {r["trial"]: r["flops"] for r in rows}
    # trial 0 (0.9, depth 2) and trial 1 (0.8, depth 1, fewest FLOPs) are the front; 2 is dominated by 0
    assert sorted(flops) == [0, 1] and flops[1] < flops[0]
    assert {"accuracy", "params", "stem", "blocks", "depths", "widths", "kernel", "norm_act"} <= set(rows[0])
    # the area the front dominates in (FLOPs / budget, accuracy) from the reference point (1, 0)
    assert out["study"] == "s" and out["budget"] == 60_000_000
    assert out["hypervolume"] == pytest.approx(hypervolume([(r["flops"], r["accuracy"]) for r in rows], 60_000_000)) and 0 < out["hypervolume"] < 1
    plot = tmp_path / "front.png"
    table = cli(study_dir, "pareto", "--study", "s", "--plot", str(plot)).stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "Pareto front of s" in table


def test_export_best_registers_a_timm_model_whose_cost_equals_the_record(study_dir):
    result = cli(study_dir, "export", "--study", "s", "--best", "--name", "my_net")
    assert "exported trial 0 as my_net" in result.stdout
    code = ("import timm, torch, nas.export.zoo; m = timm.create_model('my_net', num_classes=5, drop_path_rate=0.1);"
            "f = timm.create_model('my_net', features_only=True);"
            "print(m(torch.zeros(2, 3, 64, 64)).shape[1], m.drop_path_rate, f.feature_info.channels(), m.pretrained_cfg['notes'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=study_dir, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.startswith("5 0.1 [8, 16, 32, 64]") and "study=s" in out and "trial=0" in out


def test_export_front_and_several_trials_write_one_checked_entry_each(study_dir, tmp_path):
    front_numbers = [r["trial"] for r in json.loads(cli(study_dir, "pareto", "--study", "s", "--json").stdout)["front"]]
    out = tmp_path / "zoo"
    result = cli(study_dir, "export", "--study", "s", "--front", "--out", str(out))
    assert sorted(p.stem for p in out.glob("*.py")) == sorted(f"s_trial{n}" for n in front_numbers)
    assert result.stdout.count("checked against the rebuilt model") == len(front_numbers) == 2
    cli(study_dir, "export", "--study", "s", "--trial", "2", "--trial", "3", "--out", str(out))  # 3 was stopped early: allowed
    assert sorted(p.stem for p in out.glob("*.yaml")) == ["s_trial0", "s_trial1", "s_trial2", "s_trial3"]
    refused = cli(study_dir, "export", "--study", "s", "--trial", "2", "--trial", "4", "--out", str(tmp_path / "none"), check=False)
    assert refused.returncode == 2 and refused.stderr.startswith("error: trial: 4 has no accuracy to export: refused before training")
    assert not (tmp_path / "none").exists()  # nothing written when one of the trials cannot be exported


@pytest.mark.parametrize(
    "study, name", [("s", "s_trial3"), ("Run-2.v1", "run_2_v1_trial3"), ("2026 sweep", "study_2026_sweep_trial3"), ("é", "__trial3")]
)
def test_default_entry_names_are_valid_whatever_the_study_is_called(study, name):
    from nas.export.zoo import check_name, default_entry_name

    assert default_entry_name(study, 3) == name
    check_name(name)  # a lowercase identifier no timm model uses


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "--study", "nope", "--best"], "error: study: no study 'nope'"),
        (["export", "--study", "s", "--trial", "42"], "error: trial: study 's' has no trial 42"),
        (["export", "--study", "s", "--trial", "4"], "error: trial: 4 has no accuracy to export: refused before training: over the budget"),
        (["export", "--study", "s", "--best", "--name", "resnet50"], "error: name: 'resnet50' is already a timm model"),
        (["export", "--study", "s", "--best", "--name", "Bad-Name"], "error: name: must be a lowercase Python identifier"),
        (["export", "--study", "s"], "error: export: give exactly one of --trial N (repeatable), --best and --front"),
        (["export", "--study", "s", "--best", "--front"], "error: export: give exactly one of --trial N (repeatable), --best and --front"),
        (["export", "--study", "s", "--front", "--name", "x"], "error: name: names one entry; with several trials each is named"),
        (["export", "--study", "s", "--trial", "0", "--trial", "1", "--name", "x"], "error: name: names one entry"),
        (["pareto", "--study", "nope"], "error: study: no study 'nope'"),
        (["pareto", "--study", "s", "--plot", "front.jpg"], "error: plot: must be a .png file name"),
        (["dashboard", "--study", "nope"], "error: study: no study 'nope'"),
        (["train", "--model", "no_such_model", "--epochs", "1"], "error: model: 'no_such_model' is not a registered model"),
        (["train", "--model", "convspace_resnet50", "--resume"], "error: resume: no checkpoint at runs/train/last.pth"),
        (["train", "--model", "convspace_resnet50", "--batch-size", "3"], "error: batch-size: mixup/cutmix pair the images"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(study_dir, args, message):
    result = cli(study_dir, *args, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert not (study_dir / "studies" / "nope.db").exists()


def test_dashboard_serves_the_study_over_http(study_dir):
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "dashboard", "--study", "s", "--port", "0"],
                              cwd=study_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = ""
        while "http://" not in printed:  # the URL is printed once the port is bound, with this launch's token
            line = server.stdout.readline()
            assert line, printed
            printed += line
        url = printed[printed.index("http://"):].split()[0]
        base, token = url.split("/dashboard/")[0], url.partition("?token=")[2]
        assert url.startswith("http://127.0.0.1:") and "/dashboard/studies/1?token=" in url and len(token) >= 40
        authorized = {"Authorization": f"Bearer {token}"}
        body = json.load(urllib.request.urlopen(urllib.request.Request(f"{base}/api/studies", headers=authorized), timeout=10))
        assert [s["study_name"] for s in body["study_summaries"]] == ["s"]
        assert body["study_summaries"][0]["directions"] == ["maximize", "minimize"]
        request = urllib.request.Request(f"{base}/static/bundle.js", headers={"Accept-Encoding": "gzip", **authorized})
        assert urllib.request.urlopen(request, timeout=5).status == 200
    finally:
        server.terminate()
        server.communicate(timeout=10)


def test_train_one_epoch_then_resume_to_epoch_two(study_dir):
    cli(study_dir, "export", "--study", "s", "--trial", "1", "--name", "tiny_net")
    args = ["train", "--model", "tiny_net", "--batch-size", "64", "--resolution", "32", "--output", "run"]
    first = cli(study_dir, *args, "--epochs", "1")
    assert "epoch 1/1" in first.stdout
    log = [json.loads(line) for line in (study_dir / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1] and 0 <= log[0]["top1"] <= 100 and log[0]["top5"] >= log[0]["top1"]
    assert "ema_top1" in log[0]  # LayerNorm net: EMA on
    second = cli(study_dir, *args, "--epochs", "2", "--resume")
    assert "epoch 2/2" in second.stdout and "epoch 1/" not in second.stdout
    log = [json.loads(line) for line in (study_dir / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    from trainers.full import load_checkpoint

    assert load_checkpoint(study_dir / "run" / "last.pth")["epoch"] == 1  # 0-based: the second epoch; loaded as data


def test_pretrained_cfg_pool_size_follows_a_dilated_last_stage():
    import dataclasses

    from nas.export.zoo import pretrained_cfg
    from space.presets import PRESETS

    cfg = PRESETS["resnet50"]
    dilated = dataclasses.replace(cfg, stages=(*cfg.stages[:3], dataclasses.replace(cfg.stages[3], dilation=2)))
    assert pretrained_cfg(cfg)["pool_size"] == (7, 7) and pretrained_cfg(dilated)["pool_size"] == (14, 14)  # output stride 16


def test_the_model_names_read_from_timms_source_are_timms_registry():
    """`train --model` is checked against timm's registry without importing timm (nas.export.entries.timm_model_names):
    for the installed timm the names read from its source must be exactly the ones it registers."""
    import timm

    from nas.export.entries import check_model_name, timm_model_names

    timms_own = {n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("timm.")}  # not the zoo's
    assert timm_model_names() == timms_own
    for name in ("resnet50", "resnet50.a1_in1k", "convspace_convnext_tiny"):
        check_model_name(name)  # a timm model, one with a pretrained tag, a preset: all accepted
