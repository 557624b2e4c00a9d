"""A fixed-architecture study file: every listed network trains once, the study keeps the results."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from nas.evaluate.study_file import load_study_file
from space.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_roadmap_file_lists_every_roadmap_step():
    spec = load_study_file(ROOT / "studies" / "roadmap.yaml")
    assert list(spec.reference) == [n for n in PRESETS if n.startswith("roadmap_")]
    assert spec.reference["roadmap_12_separate_downsampling"] == 81.97


def test_ablation_trains_each_network_once_and_prints_kendall_tau_with_its_interval(tmp_path):
    study_file = tmp_path / "two.yaml"
    study_file.write_text(yaml.safe_dump({
        "study": "two", "proxy": {"epochs": 1, "resolution": 32, "batch_size": 16, "data": "synthetic"},
        "reference": {"roadmap_03_depthwise": 78.28, "roadmap_12_separate_downsampling": 81.97},
    }))
    run = [sys.executable, str(ROOT / "cli.py"), "ablation", str(study_file)]
    first = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "proxy vs reference over 2 networks: Kendall tau" in first.stdout and "roadmap_03_depthwise" in first.stdout
    assert "no interval: fewer than 5 networks" in first.stdout  # two networks rank alike or not by chance alone
    study = optuna.load_study(study_name="two", storage=f"sqlite:///{tmp_path}/studies/two.db")
    assert sorted(t.user_attrs["preset"] for t in study.trials) == ["roadmap_03_depthwise", "roadmap_12_separate_downsampling"]
    again = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert "roadmap_03_depthwise finished" in first.stdout
    assert again.returncode == 0 and "finished: proxy accuracy" not in again.stdout  # nothing retrained
    assert len(optuna.load_study(study_name="two", storage=f"sqlite:///{tmp_path}/studies/two.db").trials) == 2
    # after `confirm --top 2` a step's accuracy is the mean of its seeds (a repeat stored as confirm stores it)
    from nas.evaluate.ablation import run_ablation
    from nas.evaluate.confirm import repeat_trial

    depthwise = next(t for t in study.trials if t.user_attrs["preset"] == "roadmap_03_depthwise")
    study.add_trial(repeat_trial(depthwise, 1, {"proxy_accuracy": depthwise.values[0] + 0.1, "epochs": 1}))
    rows = {r["preset"]: r for r in run_ablation(load_study_file(study_file), f"sqlite:///{tmp_path}/studies/two.db")}
    assert rows["roadmap_03_depthwise"]["proxy_accuracy"] == pytest.approx(depthwise.values[0] + 0.05)
    assert rows["roadmap_03_depthwise"]["seeds"] == 2 and rows["roadmap_12_separate_downsampling"]["seeds"] == 1
    # the same study with another proxy would mix differently trained networks in one table: refused, naming why
    study_file.write_text(study_file.read_text().replace("epochs: 1", "epochs: 2"))
    changed = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert changed.returncode == 2 and changed.stderr.startswith(
        "error: study: 'two' was made with other settings (use them, or pick a new --study name):\n"
        "  proxy.epochs: 1 in the study, 2 now\n"), changed.stderr
    study_file.write_text(study_file.read_text().replace("epochs: 2", "epochs: 1"))
    # the study holds the search's record of a trained trial: its front can be listed and exported to timm
    front = json.loads(subprocess.run([*run[:2], "pareto", "--study", "two", "--json"], cwd=tmp_path, capture_output=True, text=True).stdout)["front"]
    assert front and {r["depths"] for r in front} == {"3-3-9-3"}  # both networks have ConvNeXt-T's stage ratio
    exported = subprocess.run([*run[:2], "export", "--study", "two", "--best"], cwd=tmp_path, capture_output=True, text=True)
    assert exported.returncode == 0 and "checked against the rebuilt model" in exported.stdout, exported.stderr


def test_bad_study_files_are_user_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("study: x\nreference: {roadmap_03_depthwise: [\n")
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ablation", str(broken)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith(f"error: study file: {broken} is not valid YAML")
    assert len(result.stderr.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"study": "x", "reference": {"resnet51": 1.0}}))
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ablation", str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: preset: unknown name 'resnet51'")
    bad.write_text(yaml.safe_dump({"study": "x", "reference": {}, "proxy": {"epoch": 2}}))
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ablation", str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "proxy.epoch is unknown" in result.stderr
    bad.write_text(yaml.safe_dump({"study": "x", "reference": {}, "proxy": {"epochs": 0}}))
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "ablation", str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == "error: study file: proxy.epochs: must be >= 1, got 0"


def test_an_ablation_study_without_configs_is_a_one_line_error_for_pareto_and_export(tmp_path):
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path}/studies/old.db", directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.9, 4.47e9], user_attrs={"preset": "convnext_tiny", "flops": 4470437376}))
    for command in (["pareto", "--study", "old"], ["export", "--study", "old", "--best"]):
        result = subprocess.run([sys.executable, str(ROOT / "cli.py"), *command], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.strip() == (
            "error: study: trial 0 holds no network config (an ablation study made before convspace recorded one); "
            "rerun the ablation into a new study"
        )

