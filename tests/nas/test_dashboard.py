"""The dashboard: what optuna-dashboard's own API serves through the view, and a port in use as one line."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine.storage import open_storage
from nas.front.dashboard_view import TrainedTrialsView

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 4_500_000_000
# (status, accuracy, FLOPs) as the search's bridge records them; numbers 0..6 in this order
ROWS = [("over_budget", None, 54_000e9), ("trained", 0.8, 3.2e9), ("over_budget", None, 9e9), ("stopped", 0.5, 1.1e9),
        ("duplicate", None, 3.2e9), ("failed", None, 2.0e9), ("trained", 0.7, 1.5e9), ("repeat", 0.78, 3.2e9)]


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A study written through Optuna as the search writes it: refused samples are PRUNED trials too."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["proxy_accuracy", "flops"])
    study.set_user_attr("budget", BUDGET)
    for status, accuracy, flops in ROWS:
        trial = study.ask()
        trial.suggest_int("width", 8, 64)
        trial.set_user_attr("flops", int(flops))
        trial.set_user_attr("status", status)
        if status == "stopped":
            trial.set_user_attr("proxy_accuracy", accuracy)
        if status == "trained":
            study.tell(trial, [accuracy, flops])
        else:
            study.tell(trial, state=TrialState.FAIL if status == "failed" else TrialState.PRUNED)
    return url


def served(url: str, path: str) -> dict:
    """GET `path` from optuna-dashboard's own WSGI app over the view, in this process."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    environ: dict = {"PATH_INFO": path.split("?")[0], "QUERY_STRING": path.partition("?")[2]}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = errors = io.StringIO()
    status = []
    body = b"".join(wsgi(TrainedTrialsView(open_storage(url)))(environ, lambda s, h, exc=None: status.append(s)))
    assert status[0].startswith("200"), errors.getvalue()
    return json.load(io.BytesIO(body))


def test_the_dashboard_lists_one_trial_per_training_with_one_state_per_outcome(url):
    detail = served(url, "/api/studies/1?after=0")
    trials = {t["number"]: t for t in detail["trials"]}
    # numbers as in the study (export --trial N), refused samples left out: the chips no longer mix them with ASHA's
    assert {n: t["state"] for n, t in trials.items()} == {1: "Complete", 3: "Pruned", 5: "Fail", 6: "Complete"}
    assert detail["objective_names"] == ["proxy_accuracy", "GFLOPs"] and trials[1]["values"] == [0.8, 3.2]
    assert [a["key"] for a in trials[3]["user_attrs"][:3]] == ["ended", "gflops", "status"]
    assert trials[3]["user_attrs"][0]["value"] == "stopped early by the scheduler before its first epoch ended (no accuracy)"
    assert trials[3]["user_attrs"][1]["value"] == "1.1"
    assert sorted(t["number"] for t in detail["best_trials"]) == [1, 6]
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"][:2]}
    # trial 7 repeats trial 1 with another seed (confirm): a seed of a listed network, counted but not a point
    assert attrs == {"trials": "2 trained to the end, 1 stopped early by the scheduler, 1 failed, 1 trained again with another seed (confirm)",
                     "not listed": "1 trained again with another seed (a listed trial's objective is the mean over its seeds); 3 refused "
                                   "before training: 2 over the budget, 1 already evaluated (budget 4.5 GFLOPs)"}
    other = optuna.create_study(study_name="other", storage=url, directions=["maximize", "minimize"])
    other.add_trial(optuna.trial.create_trial(values=[1.0, 2e9]))  # a study the search did not write: shown as it is
    summaries = {s["study_name"]: s for s in served(url, "/api/studies")["study_summaries"]}
    assert summaries["s"]["user_attrs"][0]["key"] == "trials" and summaries["other"]["user_attrs"] == []
    assert served(url, "/api/studies/2?after=0")["trials"][0]["values"] == [1.0, 2e9]
    # a view only: the study keeps every sample, in FLOPs, for pareto, export and the samplers
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == len(ROWS) and study.trials[1].values == [0.8, 3.2e9]


def test_dashboard_on_a_port_in_use_is_one_line_and_exit_2(url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "dashboard", "--study", "s", "--storage", url, "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: port: cannot serve on 127.0.0.1:{port} (Address already in use)")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""  # nothing announced, nothing served
