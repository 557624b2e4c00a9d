"""Repeated seeds (`confirm`): the front on means, the noise floor and its marks, a real resumable run through Ray."""

import json
import math
import re
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine.events import ConfirmOpened, EpochEnded, RunEnded, RunRequeued
from nas.engine.record import counts_toward_total, holds_config
from nas.evaluate.confirm import repeat_trial, run_confirm
from nas.front.pareto import front, study_hypervolume
from nas.front.seeds import Scores, noise_floor, seed_scores, within_noise
from tests.conftest import write_study
from trainers.settings import ProxySettings

PROXY = {k: v for k, v in ProxySettings(epochs=1, data="synthetic", batch_size=16).to_dict().items() if k != "threads"}


def confirmable_study(root, name="c"):
    """write_study's trials (0, 1 on the front at 0.9 and 0.8; 2 dominated at 0.7) with a proxy in its identity."""
    study = write_study(root, name)
    study.set_user_attr("identity", {"cost_resolution": 224, "proxy": PROXY})
    return study


def add_repeats(study, repeats):
    """(trial number, seed, accuracy) repeats stored as `confirm` stores them."""
    trials = {t.number: t for t in study.get_trials()}
    for number, seed, accuracy in repeats:
        study.add_trial(repeat_trial(trials[number], seed, {"proxy_accuracy": accuracy, "epochs": 1, "status": "trained"}))


def test_scores_noise_floor_is_the_pooled_std_and_marks_gains_within_two_standard_errors():
    a, b = Scores((0.80, 0.84), (0, 1)), Scores((0.90, 0.90, 0.96), (0, 1, 2))
    assert a.mean == pytest.approx(0.82) and a.std == pytest.approx(math.sqrt(0.0008))
    assert Scores((0.7,), (0,)).std is None
    # pooled: (0.0008 + 0.0024) squared deviations over 1 + 2 degrees of freedom; a single seed adds nothing
    floor, n = noise_floor([a, b, Scores((0.5,), (0,))])
    assert (floor, n) == (pytest.approx(math.sqrt(0.0032 / 3)), 2)
    assert noise_floor([Scores((0.5,), (0,))]) is None
    # b gains 0.10 over a; two standard errors of the difference: 2 * 0.01 * sqrt(1/3 + 1/2) = 0.018
    assert within_noise([a, b], 0.01) == [False, False]
    assert within_noise([a, b], 0.07) == [False, True]  # 2 * 0.07 * 0.913 = 0.128 > 0.10
    assert within_noise([a, b], None) == [False, False]


def test_the_front_stands_on_means_and_repeats_are_never_points_of_their_own(tmp_path):
    study = confirmable_study(tmp_path)
    assert [t.number for t in front(study)] == [1, 0]
    add_repeats(study, [(0, 1, 0.60), (0, 2, 0.60), (1, 1, 0.80)])  # trial 0 now means 0.70, below trial 1's 0.80
    study = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path}/studies/c.db")
    scores = seed_scores(study)
    assert scores[0].accuracies == (0.9, 0.6, 0.6) and scores[0].seeds == (0, 1, 2) and scores[1].seeds == (0, 1)
    assert [t.number for t in front(study)] == [1]  # dominated on the means: cheaper trial 1 is as good or better
    assert study_hypervolume(study) == pytest.approx((1 - study.trials[1].values[1] / 60e6) * 0.8)  # trial 1's step alone
    repeats = [t for t in study.trials if t.user_attrs.get("status") == "repeat"]
    assert len(repeats) == 3 and all(t.state == TrialState.PRUNED and not counts_toward_total(t) and not holds_config(t) for t in repeats)
    assert len(study.best_trials) == 2  # Optuna's own front still reads the stored first-seed objective: ours does not


def test_pareto_prints_mean_and_std_seeds_noise_floor_and_json_fields(tmp_path):
    study = confirmable_study(tmp_path)
    add_repeats(study, [(0, 1, 0.86), (1, 1, 0.79), (2, 1, 0.71)])
    def run(*args):
        return subprocess.run([sys.executable, "cli.py", "pareto", "--study", "c", "--storage", f"sqlite:///{tmp_path}/studies/c.db", *args],
                              capture_output=True, text=True, timeout=60)

    out = json.loads(run("--json").stdout)
    rows = {r["trial"]: r for r in out["front"]}
    assert rows[0]["accuracy"] == pytest.approx(0.88) and rows[0]["seeds"] == 2 and rows[0]["accuracies"] == [0.9, 0.86]
    assert rows[0]["accuracy_std"] == pytest.approx(math.sqrt(0.0008))
    # pooled over the three repeated networks: (0.0008 + 0.00005 + 0.00005) / 3
    assert out["noise"]["trials"] == 3 and out["noise"]["std"] == pytest.approx(math.sqrt(0.0009 / 3))
    assert rows[1]["within_noise"] is False and rows[0]["within_noise"] is False  # 0.88 - 0.795 = 0.085 > 2 SE (0.035)
    table = run().stdout
    assert "0.8800 ± 0.0283" in table and "noise floor ± 0.0173 (pooled std over seeds of 3 networks)" in table
    assert "3 trained again with another seed (confirm)" in table


def test_pareto_without_repeats_says_the_noise_floor_is_unknown_and_how_to_measure_it(tmp_path):
    confirmable_study(tmp_path)
    out = subprocess.run([sys.executable, "cli.py", "pareto", "--study", "c", "--storage", f"sqlite:///{tmp_path}/studies/c.db"],
                         capture_output=True, text=True, timeout=60).stdout
    # spelled as it was run: with the Python that ran it (.venv/bin/python where that lives under the working folder)
    assert re.search(r"noise floor unknown: one seed per network; measure it with: \S*python cli\.py confirm --seeds 3 --study c\n", out)


@pytest.fixture
def ray_in_this_process():
    """run_confirm starts Ray in the test process: shut it down after, as a command would on exit (a local Ray left
    running would die with the next `ray stop`, and take this process with it)."""
    import ray

    yield
    ray.shutdown()


def test_confirm_trains_the_missing_seeds_through_ray_stores_each_and_resumes(tmp_path, ray_in_this_process):
    study = confirmable_study(tmp_path)
    url = f"sqlite:///{tmp_path}/studies/c.db"
    events, stored_when_told = [], []

    def progress(event) -> None:  # a printer: it reads the file back, and finds each repeat stored before it hears of it
        events.append(event)
        if isinstance(event, RunEnded):
            stored_when_told.append(sum(t.user_attrs.get("status") == "repeat" for t in optuna.load_study(study_name="c", storage=url).trials))

    first = run_confirm("c", url, seeds=2, results_dir=str(tmp_path / "ray"), progress=progress)
    assert first.targets == [1, 0] and first.trained == 2 and not first.failed
    assert events[0] == ConfirmOpened((1, 0), runs=2, seeds=2) and stored_when_told == [1, 2]
    assert sorted(e.name for e in events if isinstance(e, RunEnded)) == ["repeat of trial 0 with seed 1", "repeat of trial 1 with seed 1"]
    scores = seed_scores(optuna.load_study(study_name="c", storage=url))
    assert scores[0].seeds == (0, 1) and scores[1].seeds == (0, 1) and scores[2].seeds == (0,)
    assert all(0 <= a <= 1 for a in scores[0].accuracies)
    again = run_confirm("c", url, seeds=2, results_dir=str(tmp_path / "ray"))
    assert again.trained == 0  # every seed is stored: nothing to train
    top = run_confirm("c", url, seeds=2, top=3, results_dir=str(tmp_path / "ray"))
    assert sorted(top.targets) == [0, 1, 2]
    assert top.trained == 1  # only trial 2 lacked its second seed
    assert len([t for t in study.get_trials() if t.user_attrs.get("status") == "repeat"]) == 3


def test_confirms_printer_says_each_event_in_one_line_and_leaves_out_the_epochs(capsys):
    from console.runs import confirm_progress, network_progress

    said = confirm_progress("c", seeds=3, top=None)
    said(ConfirmOpened((1, 0), runs=4, seeds=3))
    said(EpochEnded(1, epoch=1, acc=0.5))
    said(RunEnded("repeat of trial 1 with seed 1", "trained", 0.8123, train_seconds=12.4))
    said(RunEnded("repeat of trial 0 with seed 1", "failed", None, "ValueError: boom", 3.0))
    said(RunRequeued("repeat of trial 0 with seed 2", "its Ray worker died (OOM)"))
    fixed = network_progress("accuracy")
    fixed(RunEnded("network 2 (proxy)", "trained", 0.5))
    fixed(RunEnded("network 3 (proxy)", "failed", None, "ValueError: boom"))
    network_progress("accuracy", quiet=True)(RunEnded("network 4 (proxy)", "trained", 0.5))
    assert capsys.readouterr().out.splitlines() == [
        "confirming the 2 front networks of c with 3 seeds each: 4 trainings to run",
        "  repeat of trial 1 with seed 1: accuracy 0.8123 (12 s)",
        "  repeat of trial 0 with seed 1: failed (3 s)",
        "  repeat of trial 0 with seed 2 cut short (its Ray worker died (OOM)): queued to train again",
        "  network 2 (proxy) finished: accuracy 0.5000",
        "  network 3 (proxy) failed: ValueError: boom",
    ]


def test_confirm_refuses_bad_input_in_one_line_before_ray(tmp_path):
    confirmable_study(tmp_path)
    code = ("import sys; from typer.testing import CliRunner; import cli; "
            "r = CliRunner().invoke(cli.app, sys.argv[1:]); print(r.output, end=''); "
            "print('ray' in sys.modules, 'torch' in sys.modules); sys.exit(r.exit_code)")
    for args, message in [(["--seeds", "1"], "error: seeds: must be >= 2 (the search's own training is the first), got 1"),
                          (["--top", "0"], "error: top: must be >= 1, got 0"),
                          (["--study", "nope"], "error: study: no study 'nope'")]:
        storage = ["--storage", f"sqlite:///{tmp_path}/studies/c.db"] if "--study" not in args else []
        r = subprocess.run([sys.executable, "-c", code, "confirm", *args, *storage], capture_output=True, text=True, timeout=60)
        lines = r.stdout.splitlines()
        assert r.returncode == 2 and lines[0].startswith(message) and lines[-1] == "False False", r.stdout + r.stderr


def test_export_picks_the_best_mean_and_records_the_seeds(tmp_path):
    from nas.export.zoo import _seed_record, pick_trial

    study = confirmable_study(tmp_path)
    assert pick_trial(study, None).number == 0
    add_repeats(study, [(0, 1, 0.6), (0, 2, 0.6), (1, 1, 0.8)])
    assert pick_trial(study, None).number == 1  # 0.80 on two seeds beats 0.70 on three
    scores = seed_scores(study)
    assert _seed_record(scores[1]) == {"proxy_accuracy_mean": 0.8, "proxy_accuracy_std": 0.0, "seeds": 2}
    assert _seed_record(scores[2]) == {}
