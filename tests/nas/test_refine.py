"""`refine` on constructed random sweeps where the truth is known: real Optuna studies in SQLite, the trials' params drawn
by the space's own sampling and added with optuna's create_trial, accuracy a known function of them (no training)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from nas.analysis.refine import refine, study_space, write
from nas.engine.record import STATUS, Status, new_trial
from nas.engine.study import open_study
from nas.front.pareto import load_study
from space.choices import SeededSuggester, Space
from space.errors import ConvspaceError
from space.files import read_yaml

ROOT = Path(__file__).resolve().parents[2]
# tests/nas/tiny_space.yaml with a wider base width (a range of 8 values), a kernel range and three attentions
SPACE = {**read_yaml(ROOT / "tests" / "nas" / "tiny_space.yaml", "space"), "name": "tinier"}
SPACE["dimensions"] = {**SPACE["dimensions"], "base_width": {"int": [8, 64], "step": 8}, "kernel": {"int": [3, 9], "step": 2},
                       "attention": {"choice": ["none", "se", "cbam"]}}
MIN = 0.0  # the command's --min-importance: every dimension tested
Score = Callable[[dict[str, Any]], float]


class Recorder(SeededSuggester):
    """Seeded random draws that also keep each param and its Optuna distribution, as a trial of a random sweep stores them."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(rng)
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.distributions[name] = CategoricalDistribution(list(choices))
        self.params[name] = value = super().suggest_categorical(name, choices)
        return value

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        self.distributions[name] = IntDistribution(low, high, step=step, log=log)
        self.params[name] = value = super().suggest_int(name, low, high, step, log)
        return value

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        self.distributions[name] = FloatDistribution(low, high, step=step, log=log)
        self.params[name] = value = super().suggest_float(name, low, high, step, log)
        return value


def make_study(root: Path, name: str, score: Score, *, n: int = 60, seed: int = 0,
               sampler: optuna.samplers.BaseSampler | None = None, space_data: dict[str, Any] = SPACE) -> None:
    """A random sweep of SPACE in root/studies/<name>.db (where the commands find it): accuracy = score(params) + noise."""
    space = Space.from_dict(space_data)
    identity = {"space": space.name, "space_dims": {k: dataclasses.asdict(d) for k, d in space.dims.items()}, "budget": 10**9}
    study, _ = open_study(name, f"sqlite:///{root}/studies/{name}.db", identity,
                          sampler=sampler or optuna.samplers.RandomSampler(seed=seed))
    rng, trials = random.Random(seed), []
    for _ in range(n):
        drawn = Recorder(rng)
        space.sample(drawn)
        accuracy = score(drawn.params) + rng.gauss(0, 0.004)
        trials.append(new_trial({STATUS: Status.TRAINED}, params=drawn.params, distributions=drawn.distributions,
                                values=[accuracy, 1e8 * (1 + rng.random())]))  # optuna's create_trial, through the trial record
    study.add_trials(trials)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweeps: one where only a narrow base width trains well, one where CBAM fails, one where nothing matters."""
    path = tmp_path_factory.mktemp("refine")
    (path / "studies").mkdir()
    make_study(path, "range", lambda p: 0.9 if p["base_width"] <= 32 else 0.5)
    make_study(path, "choice", lambda p: 0.5 if p["attention"] == "cbam" else 0.9)
    make_study(path, "noise", lambda p: 0.9, seed=12)  # a seed whose noise alone puts wide models ahead of narrow ones
    make_study(path, "tpe", lambda p: 0.5 if p["attention"] == "cbam" else 0.9, n=20, sampler=optuna.samplers.TPESampler(seed=0))
    per_stage = {**SPACE, "dimensions": {**SPACE["dimensions"], "kernel": {"int": [3, 9], "step": 2, "per_stage": True}}}
    make_study(path, "stages", lambda p: 0.9 if p["kernel_s0"] <= 5 else 0.5, space_data=per_stage)
    return path


def study(root: Path, name: str) -> optuna.Study:
    return load_study(name, f"sqlite:///{root}/studies/{name}.db")


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_range_is_cut_to_its_good_interval(root):
    refined = refine(study(root, "range"), min_importance=MIN)
    assert [c.dimension for c in refined.changes] == ["base_width"]  # nothing else drives the accuracy
    change = refined.changes[0]
    assert change.before == {"int": [8, 64], "step": 8}
    low, high = change.after["int"]
    assert change.after["step"] == 8 and 8 <= low <= high <= 32  # the bad widths (40-64) are cut, the grid kept
    assert refined.space.dims["base_width"].high == high and change.importance >= 0.1
    inside, outside = change.evidence["inside"], change.evidence["outside"]
    assert inside["n"] + outside["n"] == change.evidence["n"] == 60
    assert inside["error_quartiles"][2] < 0.15 < 0.45 < outside["error_quartiles"][0]  # ~0.1 kept, ~0.5 cut


def test_a_choice_list_is_cut_to_its_good_values(root):
    refined = refine(study(root, "choice"), min_importance=MIN)
    assert [c.dimension for c in refined.changes] == ["attention"]
    assert refined.changes[0].before == {"choice": ["none", "se", "cbam"]}
    assert refined.changes[0].after == {"choice": ["none", "se"]}
    assert refined.space.dims["attention"].values == ("none", "se")
    assert refined.warnings == []  # a random sweep trained to the end


def test_nothing_clear_nothing_changed(root):
    refined = refine(study(root, "noise"), min_importance=MIN)
    assert refined.changes == [] and refined.space.dims == study_space(study(root, "noise")).dims
    # every sampled dimension is accounted for; the noise made wide models look better, and PED-ANOVA ranks the width
    # first, but a gap as large comes from shuffled errors too often
    assert set(refined.unchanged) == {"stem", "downsample", "act", "block", "base_width", "kernel", "attention"}
    assert refined.unchanged["base_width"].startswith("good part 32-64 (step 8) is better, but no more than chance: ")
    # a clear effect below the importance threshold is not acted on either
    assert refine(study(root, "range"), min_importance=1.0).changes == []


@pytest.mark.parametrize("name", ["range", "choice"])
def test_every_point_of_the_refined_space_is_in_the_original(root, name):
    original, refined = study_space(study(root, name)), refine(study(root, name), min_importance=MIN).space
    points = refined.sample_random(400, seed=3)
    assert all(original.contains(cfg) for cfg in points)
    assert all(refined.contains(cfg) for cfg in points)
    # and it is narrower: some points of the original are not in it
    assert not all(refined.contains(cfg) for cfg in original.sample_random(200, seed=3))


def test_the_space_file_loads_and_says_why(root, tmp_path):
    refined = refine(study(root, "range"), min_importance=MIN)
    path = tmp_path / "out" / "range-refined.yaml"
    write(refined, path)
    loaded = Space.from_yaml(path)
    assert loaded.dims == refined.space.dims and loaded.name == "range-refined" and "from study range (60 trained models)" in loaded.description
    text = path.read_text()
    assert "from study 'range': 60 trained models of space 'tinier'" in text
    note = text.split("  base_width:")[0].splitlines()[-2:]  # the comment right above the narrowed dimension
    assert note[0].startswith("  # base_width: kept ") and "of 8-64 (step 8) (importance" in note[0]
    assert "of 60 models, error quartiles" in note[1] and "for the" in note[1] and "cut" in note[1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["range-refined.yaml"]  # no temporary file left


def test_a_per_stage_dimension_is_left_whole_and_said_so(root):
    refined = refine(study(root, "stages"), min_importance=MIN)
    assert refined.changes == [] and refined.space.dims["kernel"].per_stage
    assert refined.unchanged["kernel"].startswith("sampled per stage: one spec serves every stage")


def test_a_biased_study_warns_and_a_study_without_a_space_is_refused(root, tmp_path):
    refined = refine(study(root, "tpe"), min_importance=MIN)
    assert len(refined.warnings) == 1 and "TPESampler, not drawn at random" in refined.warnings[0]
    assert "# warning: 'tpe': trials chosen by TPESampler" in refined.yaml()
    bare = optuna.create_study(study_name="bare", storage=f"sqlite:///{tmp_path}/bare.db", directions=["maximize", "minimize"])
    with pytest.raises(ConvspaceError, match="study: 'bare' records no design space"):
        refine(bare, min_importance=MIN)


def test_command_json_writes_a_space_every_command_loads(root, tmp_path):
    out = tmp_path / "choice-refined.yaml"
    result = cli(root, "refine", "--study", "choice", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"space", "from", "changes"} <= set(report) and (report["space"], report["from"]) == ("choice-refined", "choice")
    assert [set(c) for c in report["changes"]] == [{"dimension", "before", "after", "importance", "evidence"}]
    assert report["changes"][0]["after"] == {"choice": ["none", "se"]}
    sampled = cli(root, "sample", "--space", str(out), "-n", "3", "--json")
    assert sampled.returncode == 0 and all(r["config"]["stages"][0]["attention"] in ("none", "se") for r in json.loads(sampled.stdout))


def test_command_prints_the_changes_and_the_next_commands(root):
    result = cli(root, "refine", "--study", "range")
    assert result.returncode == 0, result.stderr
    assert "base_width: 8-64 (step 8) -> " in result.stdout and "studies/range-refined.yaml" in result.stdout
    assert "search --budget 1GFLOPs --study range-refined" in result.stdout and "--space studies/range-refined.yaml" in result.stdout
    assert "analyze --study range --against range-refined" in result.stdout


def test_command_imports_neither_torch_nor_ray(root, tmp_path):
    code = ("import sys; sys.argv = ['cli.py'] + sys.argv[1:]; import cli\ntry:\n    cli.main()\nexcept SystemExit as e:\n"
            "    print(e.code, sorted(m for m in ('torch', 'timm', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, "refine", "--study", "noise", "--out", str(tmp_path / "n.yaml")], cwd=root,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stdout + result.stderr
    assert "0 dimension(s) narrowed (none clearly better)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--study", "nope"], "error: study: no study 'nope'"),
     (["--study", "range", "--min-importance", "1.5"], "error: min-importance: must be within [0, 1], got 1.5"),
     (["--study", "range", "--out", "x.txt"], "error: out: must be a .yaml file name, got 'x.txt'")],
)
def test_command_errors_are_one_line(root, args, message):
    result = cli(root, "refine", *args)
    assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1
