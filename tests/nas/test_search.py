"""The search end to end through the CLI, in a subprocess, on a tiny space and synthetic data."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas.front.pareto import front
from space.config import ArchConfig
from space.cost import arch_cost
from space.errors import ConvspaceError

ROOT = Path(__file__).resolve().parents[2]
TINY_SPACE = Path(__file__).with_name("tiny_space.yaml")
BUDGET = 40_000_000  # about half of the tiny space is over it


def search(tmp_path: Path, *extra: str, study: str = "s", wait: bool = True):
    args = [sys.executable, str(ROOT / "cli.py"), "search", "--budget", str(BUDGET), "--space", str(TINY_SPACE),
            "--study", study, "--epochs", "2", "--data", "synthetic", "--seed", "1", *extra]
    if not wait:  # its output goes to driver.log, for the failure message of a test that kills it
        log = (tmp_path / "driver.log").open("w")
        return subprocess.Popen(args, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def load(tmp_path: Path, study: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/studies/{study}.db")


def by_status(study: optuna.Study) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in study.get_trials():
        out.setdefault(t.user_attrs.get("status", t.state.name), []).append(t)
    return out


def test_search_trains_within_budget_dedups_and_resumes(tmp_path):
    first = search(tmp_path, "--trials", "4", "--bn-batches", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Pareto front of s" in first.stdout and "dashboard --study s" in first.stdout
    assert "Warning" not in first.stdout + first.stderr  # library notices (Optuna's experimental flags) stay out
    study = load(tmp_path)
    groups = by_status(study)
    trained = groups.get("trained", []) + groups.get("stopped", [])
    assert len(trained) == 4
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    for t in trained:  # every trained trial is within the budget, with its record complete
        cfg = ArchConfig.from_json(t.user_attrs["config"])
        assert arch_cost(cfg).flops == t.user_attrs["flops"] <= BUDGET
        assert {"hash", "params", "epochs", "wall_seconds", "train_seconds", "trainable_seconds", "proxy"} <= set(t.user_attrs)
        assert t.user_attrs["proxy"]["bn_batches"] == 2 and t.user_attrs["trainable_seconds"] >= t.user_attrs["train_seconds"]
    assert all(t.user_attrs["flops"] > BUDGET for t in groups.get("over_budget", []))
    for t in study.trials:  # the budget is Optuna's constraint on every sampled point (feasible when <= 0)
        assert t.constraints == {"flops_over_budget": t.user_attrs["flops"] - BUDGET}
    assert groups.get("over_budget"), "the tiny space has over-budget points: some must have been rejected"
    assert len({t.user_attrs["hash"] for t in trained}) == len(trained)  # never the same config twice
    on_front = front(study)
    assert on_front and all(t.user_attrs["status"] == "trained" and t.user_attrs["epochs"] == 2 for t in on_front)

    finished = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    again = search(tmp_path, "--trials", "6", "--bn-batches", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 of 6 trials already in the study: training 2 more" in again.stdout and "(2 of 2 finished," in again.stdout
    study = load(tmp_path)
    groups = by_status(study)
    assert len(groups.get("trained", []) + groups.get("stopped", [])) == 6  # --trials counts the ones already there
    assert {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.number in finished} == finished
    hashes = [t.user_attrs["hash"] for t in groups.get("trained", []) + groups.get("stopped", [])]
    assert len(set(hashes)) == len(hashes)


def test_pareto_asha_stops_trials_naming_itself_and_every_trial_keeps_its_epoch_accuracies(tmp_path):
    # the default scheduler; halving at eta 2 after epoch 1 stops about half of the trials that reach the rung. One
    # trial at a time (both CPUs each): with two at once, which ones reach the rung first depends on the machine's load,
    # and in an unlucky order every arrival is on the front so far and none is stopped (seen once in a full run).
    run = search(tmp_path, "--trials", "6", "--reduction-factor", "2", "--cpus-per-trial", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    groups = by_status(load(tmp_path))
    trained, stopped = groups.get("trained", []), groups.get("stopped", [])
    assert len(trained) + len(stopped) == 6 and stopped, run.stdout
    assert all(t.user_attrs["stop_reason"] == "pareto-asha" and t.user_attrs["epochs"] == 1 for t in stopped)
    assert "(pareto-asha)" in run.stdout
    for t in trained + stopped:  # one accuracy per epoch trained, the last one the trial's score; the scheduler recorded
        accuracies = t.user_attrs["epoch_accuracies"]
        assert len(accuracies) == t.user_attrs["epochs"] and accuracies[-1] == t.user_attrs["proxy_accuracy"]
        assert t.user_attrs["scheduler"] == "pareto-asha"


def test_each_scheduler_choice_builds_its_scheduler():
    from ray.tune.schedulers import ASHAScheduler

    from nas.engine.schedulers import ParetoASHA
    from nas.engine.search import make_scheduler
    from nas.engine.settings import SearchSettings
    from space.choices import Space
    from trainers.proxy import ProxySettings

    made = {name: make_scheduler(SearchSettings(study="x", budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage="sqlite://",
                                                proxy=ProxySettings(epochs=2), scheduler=name, grace_period=5))
            for name in ("pareto-asha", "asha", "none")}
    assert isinstance(made["pareto-asha"], ParetoASHA) and made["pareto-asha"]._metrics == ["acc", "flops"]
    assert isinstance(made["asha"], ASHAScheduler) and made["none"] is None  # none: Tune's FIFO, nothing stopped early
    assert SearchSettings.scheduler == "pareto-asha"


def test_kill_9_mid_trial_then_resume_keeps_finished_trials_and_retrains_the_lost_ones(tmp_path):
    long_trials = ["--epochs", "100", "--grace-period", "100", "--cpus-per-trial", "2"]  # ~15 s each, never stopped early
    driver = search(tmp_path, "--trials", "6", *long_trials, wait=False)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait until a trial is training (accepted and running)
            time.sleep(1)
            db = tmp_path / "studies" / "s.db"
            if db.exists():
                try:
                    running = [t for t in load(tmp_path).get_trials() if t.state == TrialState.RUNNING and t.user_attrs.get("accepted")]
                except Exception:
                    continue
                if running:
                    time.sleep(2)  # let it train a little
                    break
    finally:
        # kill -9 the driver and the local Ray it started (as a crash of the machine would)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    log = (tmp_path / "driver.log").read_text()[-3000:]
    assert (tmp_path / "studies" / "s.db").exists(), f"the driver never created its study:\n{log}"
    lost = [t for t in load(tmp_path).get_trials() if t.state == TrialState.RUNNING]
    assert lost, f"the driver should have died while a trial was running:\n{log}"
    lost_params = [t.params for t in lost]

    resumed = search(tmp_path, "--trials", "2", *long_trials)  # the same settings
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "left running by an earlier driver: cut short, their networks queued to train again" in resumed.stdout
    study = load(tmp_path)
    for t in lost:
        again = study.trials[t.number]
        assert again.state == TrialState.FAIL and again.user_attrs["fail_reason"].startswith("interrupted")
    retrained = [t for t in study.get_trials() if t.number > max(x.number for x in lost) and t.user_attrs.get("status") in ("trained", "stopped")]
    assert all(p in [t.params for t in retrained] for p in lost_params)
    retries = {t.user_attrs["retry_of"]: t for t in retrained if "retry_of" in t.user_attrs}
    assert sorted(retries) == sorted(t.number for t in lost)  # each retry names the trial it replaces
    assert all(t.params == study.trials[n].params and t.user_attrs["retry_reason"] == "its driver stopped" for n, t in retries.items())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "lots"], "error: budget: cannot read 'lots'"),
        (["--space", "missing.yaml"], "error: space: no file 'missing.yaml'"),
        (["--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/none"], "error: storage: cannot open"),
        (["--storage", "notaurl"], "error: storage: cannot open 'notaurl'"),
        (["--data", "/no/such/folder"], "error: data: '/no/such/folder' is neither a dataset"),
        (["--data", "cifar10", "--data-dir", "nowhere"], "error: data: cifar10 not found"),
        (["--resolution", "16"], "error: resolution: must be >= 32 (the network reduces 32x), got 16"),
        (["--address", "127.0.0.1:1"], "error: address: no Ray head answers at 127.0.0.1:1"),
        (["--address", "nohost"], "error: address: must be HOST:PORT"),
        (["--budget", "1M"], "error: budget: 0.001 GFLOPs is below every sampled point of space 'tiny' (the cheapest of 1000 costs"),
        (["--trials", "0"], "error: trials: must be in 1..100000, got 0"),
        (["--lr", "-1"], "error: lr: must be in (0, 1] (AdamW diverges far below its top; 1e-4..1e-2 is usual), got -1.0"),
        (["--cpus-per-trial", "0"], "error: cpus-per-trial: must be a number >= 0.1, got 0.0"),
        (["--gpus-per-trial", "1.5"], "error: gpus-per-trial: must be 0, a fraction below 1 (trials share a GPU) or a whole"),
        (["--gpus-per-trial", "0.25"], "error: gpus-per-trial: this machine has no GPU: leave it out to train on CPUs"),
        (["--heartbeat-grace", "5"], "error: heartbeat-grace: must be longer than the heartbeat interval (5 s), got 5"),
        (["--sampler", "grid"], "error: sampler: must be one of nsga2, tpe, random, got 'grid'"),
        (["--scheduler", "fifo"], "error: scheduler: must be one of pareto-asha, asha, none, got 'fifo'"),
        (["--flops-min", "lots"], "error: flops-min: cannot read 'lots'"),
        (["--flops-min", "2G"], "error: flops-min: must be >= 0 and below the budget (1,000,000,000 FLOPs), got 2000000000"),
        (["--flops-min", "0.9G"], "error: flops-min: no sampled point of space 'tiny' falls between 0.9 and 1 GFLOPs"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, args, message):
    if "0.25" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    base = [sys.executable, str(ROOT / "cli.py"), "search", "--budget", "1G", "--space", str(TINY_SPACE), "--study", "x"]
    result = subprocess.run(base + args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "studies" / "x.db").exists()


def test_ctrl_c_stops_with_a_summary_and_the_study_resumes(tmp_path):
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "search", "--budget", str(BUDGET), "--space", str(TINY_SPACE), "--study", "c",
         "--epochs", "100", "--grace-period", "100", "--data", "synthetic", "--trials", "3", "--cpus-per-trial", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        time.sleep(1)
        try:
            if any(t.state == TrialState.RUNNING and t.user_attrs.get("accepted") for t in load(tmp_path, "c").get_trials()):
                break
        except Exception:
            continue
    time.sleep(2)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out[-2000:]
    assert "interrupted (" in out and "Pareto front of c" in out
    study = load(tmp_path, "c")
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    stopped = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["fail_reason"].startswith("interrupted") for t in stopped)
    waiting = study.get_trials(states=(TrialState.WAITING,))  # queued to train again on resume
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(t.number for t in stopped)
    assert all(t.user_attrs["retry_reason"] == "the search stopped before it finished" for t in waiting)


def test_time_budget_ends_the_search_cleanly_and_queues_the_unfinished_trials(tmp_path):
    # a trial needs ~40 s at 3000 epochs, so one is always training when the 15 s run out
    run = search(tmp_path, "--trials", "50", "--epochs", "3000", "--grace-period", "3000", "--cpus-per-trial", "2", "--time-budget", "15")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "time budget of 15 s spent (" in run.stdout and "Pareto front of s" in run.stdout
    study = load(tmp_path)
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    cut = [t for t in study.get_trials() if t.state == TrialState.FAIL]  # training when the time ran out
    assert cut and all(t.user_attrs["fail_reason"] == "interrupted: the search stopped before it finished" for t in cut)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(t.number for t in cut)  # a rerun trains them first
    assert not by_status(study).get("trained")


def test_a_relative_data_path_reaches_the_trials(tmp_path):
    from tests.trainers.test_data import image_tree

    image_tree(tmp_path / "imgs", {"train": {"cat": 6, "dog": 6}, "val": {"cat": 2, "dog": 2}})
    args = [sys.executable, str(ROOT / "cli.py"), "search", "--budget", str(BUDGET), "--space", str(TINY_SPACE), "--data", "imgs",
            "--trials", "1", "--epochs", "1", "--batch-size", "4", "--cpus-per-trial", "2"]
    run = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    [trial] = [t for t in load(tmp_path, "convspace").trials if "epochs" in t.user_attrs]
    assert trial.user_attrs["status"] == "trained", run.stdout
    # the driver decoded the images once, before any trial started; the trial opened that cache and built none
    [cache] = (tmp_path / "studies" / "cache").iterdir()
    assert datetime.fromtimestamp((cache / "meta.json").stat().st_mtime) < trial.datetime_start


def test_a_trial_past_its_time_limit_stops_early_and_says_why(tmp_path):
    # 3000 epochs of 3 steps would take minutes; the 5 s limit ends each trial after its current step
    run = search(tmp_path, "--trials", "2", "--epochs", "3000", "--grace-period", "3000", "--batch-size", "16", "--trial-time-limit", "5",
                 "--cpus-per-trial", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    stopped = by_status(load(tmp_path)).get("stopped", [])
    assert len(stopped) == 2 and all(t.user_attrs["stop_reason"] == "time limit" and t.user_attrs["epochs"] < 3000 for t in stopped)
    assert all(5 <= t.user_attrs["trainable_seconds"] < 15 for t in stopped)
    # a trial stopped before its first epoch ended has no accuracy to show, never a made-up 0, and the search goes on
    # (batch 16: the synthetic train split holds fewer than 64 images, and drop_last would leave no step to stop at)
    early = search(tmp_path, "--trials", "1", "--trial-time-limit", "0.001", "--batch-size", "16", "--cpus-per-trial", "2", study="early")
    assert early.returncode == 0, early.stdout + early.stderr
    [cut] = by_status(load(tmp_path, "early"))["stopped"]
    assert cut.user_attrs["epochs"] == 0 and "proxy_accuracy" not in cut.user_attrs and cut.user_attrs["stop_reason"] == "time limit"
    assert run.stdout.count("stopped early by the time limit after epoch") == 2
    assert "0 trained to the end, 2 stopped early by the time limit, 0 failed" in run.stdout


def test_a_trial_that_raises_fails_with_its_reason_and_the_search_goes_on(tmp_path):
    # a batch of one image: BatchNorm cannot train on a 1x1 map of one sample (32 px reduce to 1x1), each trial raises
    (tmp_path / "elsewhere").mkdir()  # a --storage folder must exist (only studies/ is made on first use)
    elsewhere = f"sqlite:///{tmp_path}/elsewhere/r.db"  # Ray's trial folders go beside it, not into the working folder
    run = search(tmp_path, "--trials", "3", "--batch-size", "1", "--epochs", "1", "--sampler", "random",
                 "--storage", elsewhere, study="r")
    assert run.returncode == 1, run.stdout + run.stderr  # every trial failed: the search says so and exits non-zero
    assert "error: every trial of this run failed (3), the first with: ValueError: Expected more than 1 value per channel" in run.stdout
    assert (tmp_path / "elsewhere" / "ray").is_dir() and not (tmp_path / "studies").exists()
    groups = by_status(optuna.load_study(study_name="r", storage=elsewhere))
    assert len(groups.get("failed", [])) == 3 and not groups.get("trained") and not groups.get("stopped")
    assert all(t.user_attrs["fail_reason"].startswith("ValueError: Expected more than 1 value per channel") for t in groups["failed"])
    assert "failed: ValueError" in run.stdout and "0 trained to the end" in run.stdout and "3 failed" in run.stdout


def test_resuming_with_other_settings_is_refused_naming_each_change_and_keeps_the_study(tmp_path):
    from nas.engine.search import open_search_study as open_study
    from nas.engine.settings import SearchSettings
    from space.choices import Space
    from trainers.proxy import ProxySettings

    made = SearchSettings(study="r", budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage=f"sqlite:///{tmp_path}/r.db",
                          proxy=ProxySettings(epochs=2))
    study, _ = open_study(made)
    identity = study.user_attrs["identity"]
    other = dataclasses.replace(made, budget=BUDGET // 2, proxy=ProxySettings(epochs=3, bn_batches=0))
    with pytest.raises(ConvspaceError) as refused:
        open_study(other)
    assert str(refused.value) == (  # a short list, budgets in GFLOPs (issue 23)
        "study: 'r' was made with other settings (use them, or pick a new --study name):\n"
        f"  budget: {BUDGET / 1e9:.4g} GFLOPs in the study, {BUDGET // 2 / 1e9:.4g} GFLOPs now\n"
        "  proxy.bn_batches: 4 in the study, 0 now\n"
        "  proxy.epochs: 2 in the study, 3 now"
    )
    assert open_study(made)[0].user_attrs["identity"] == identity  # the same settings still resume it


def test_a_study_made_before_augmentation_resumes_with_it_off_and_the_cache_folder_is_no_setting(tmp_path):
    from nas.engine.search import open_search_study as open_study
    from nas.engine.settings import SearchSettings
    from space.choices import Space
    from trainers.proxy import ProxySettings

    made = SearchSettings(study="old", budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage=f"sqlite:///{tmp_path}/o.db",
                          proxy=ProxySettings(epochs=2, data="cifar10", augment=False, cache_dir=str(tmp_path / "a")))
    study, _ = open_study(made)
    before = {**study.user_attrs["identity"], "proxy": {k: v for k, v in study.user_attrs["identity"]["proxy"].items() if k != "augment"}}
    study.set_user_attr("identity", before)  # as a study stored before --augment existed
    moved = dataclasses.replace(made, proxy=dataclasses.replace(made.proxy, cache_dir=str(tmp_path / "b")))
    assert open_study(moved)[0].user_attrs["identity"] == before  # resumes, augmentation off, with the cache elsewhere
    from nas.evaluate.confirm import study_proxy

    assert study_proxy(study).augment is False  # its repeats train as it did (cifar10's default would be on)
    with pytest.raises(ConvspaceError, match=r"proxy.augment: off in the study, on now"):
        open_study(dataclasses.replace(made, proxy=dataclasses.replace(made.proxy, augment=True)))
