"""Design-space analysis on constructed studies where the truth is known (written through Optuna, no training)."""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats

from nas.analysis.design_space import analyze, load_trained, sampler_of, weighted_ks
from space.errors import ConvspaceError

ROOT = Path(__file__).resolve().parents[2]
KERNEL = IntDistribution(3, 9, step=2)
ACT = CategoricalDistribution(["relu", "gelu", "silu"])
WIDTH = IntDistribution(8, 64, step=8)
GROUPS = CategoricalDistribution([1, 2, 4])  # conditional: sampled for gelu nets only


def make_study(name: str, root: Path | None = None, *, n: int = 80, seed: int = 0, shift: float = 0.0, sampler: str | None = "RandomSampler",
               flops_decades: tuple[float, float] = (-1.0, 0.5), stopped: int = 0) -> optuna.Study:
    """A random sweep whose accuracy is set by the kernel alone (best 7) plus noise; FLOPs log-uniform and unrelated.

    In memory unless `root` is given (then in root/studies/<name>.db, as the commands find it): SQLite writes are slow."""
    rng = np.random.default_rng(seed)
    storage = f"sqlite:///{root}/studies/{name}.db" if root else None
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
    if sampler:
        study.set_user_attr("sampler", sampler)
    trials = []
    for i in range(n + stopped):
        params = {"kernel": int(rng.choice([3, 5, 7, 9])), "act": str(rng.choice(ACT.choices)), "width": int(rng.choice(range(8, 65, 8)))}
        distributions = {"kernel": KERNEL, "act": ACT, "width": WIDTH}
        if params["act"] == "gelu":
            params["groups"], distributions["groups"] = int(rng.choice([1, 2, 4])), GROUPS
        accuracy = 0.9 - 0.03 * abs(params["kernel"] - 7) / 2 + rng.normal(0, 0.004) + shift
        flops = 1e9 * 10 ** rng.uniform(*flops_decades)
        if i < n:
            trials.append(create_trial(params=params, distributions=distributions, values=[accuracy, flops],
                                       user_attrs={"status": "trained", "flops": flops}))
        else:
            trials.append(create_trial(params=params, distributions=distributions, state=TrialState.PRUNED,
                                       user_attrs={"status": "stopped", "flops": flops}))
    study.add_trials(trials)
    return study


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two small sweeps on disk for the command: `same` drawn as `base`, one trial stopped early in `base`."""
    path = tmp_path_factory.mktemp("analysis")
    (path / "studies").mkdir()
    make_study("base", path, n=30, stopped=1)
    make_study("same", path, n=30, seed=1)
    make_study("few", path, n=5)
    return path


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "analyze", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_kernel_alone_drives_accuracy_ranked_first_with_its_good_range():
    report, _ = analyze(make_study("k"), bins=10)
    dims = report["dimensions"]
    assert next(iter(dims)) == "kernel"  # most important first
    assert dims["kernel"]["importance"] > max(dims[d]["importance"] for d in ("act", "width", "groups"))
    assert dims["kernel"]["best"] == 7 and dims["kernel"]["good"] == [7, 7]
    assert dims["groups"]["n"] < report["n"]  # conditional: only the gelu nets hold it
    assert report["warnings"] == []  # a random sweep trained to the end: nothing biases it


def test_edf_points_and_the_normalised_edf_weighs_each_flops_bin_alike():
    # 10 cheap accurate models and 30 dear poor ones: half the weight each once normalised over 2 FLOPs bins
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([create_trial(params={"kernel": 3}, distributions={"kernel": KERNEL}, values=[acc, flops], user_attrs={"status": "trained"})
                      for acc, flops in [(0.9 + i / 1000, 1e8) for i in range(10)] + [(0.5 + i / 1000, 1e10) for i in range(30)]])
    report, _ = analyze(study, bins=2)
    errors = report["errors"]
    assert report["n"] == 40 and errors == sorted(errors) and report["edf"] == [(i + 1) / 40 for i in range(40)]
    assert report["edf"][9] == 0.25 and report["normalized_edf"][9] == pytest.approx(0.5)
    assert report["normalized_edf"][-1] == pytest.approx(1.0) and report["left_out_of_normalized"] == 0
    assert report["best_error"] == pytest.approx(1 - 0.909) and report["dimensions"]["kernel"]["best"] == 3


def test_mean_of_confirmed_accuracies_counts():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials([create_trial(params={}, distributions={}, values=[0.5, 1e9 + i], user_attrs={"status": "trained"})
                      for i in range(10)])
    # `confirm`'s repeats of trial 3 (nas.front.seeds): its accuracy is the mean of 0.5, 0.8, 0.9
    study.add_trials([create_trial(state=TrialState.PRUNED, user_attrs={"status": "repeat", "repeat_of": 3, "seed": seed,
                                                                        "proxy_accuracy": accuracy})
                      for seed, accuracy in ((1, 0.8), (2, 0.9))])
    report, _ = analyze(study, bins=10)
    assert report["n"] == 10 and report["best_error"] == pytest.approx(1 - 2.2 / 3) and report["dimensions"] == {}


def test_two_studies_of_one_distribution_are_close_and_shifted_ones_far():
    base = make_study("base", n=80)
    same, _ = analyze(base, make_study("same", n=80, seed=1), bins=10)
    assert same["ks"]["statistic"] < 0.25 and same["ks"]["pvalue"] > 0.05
    assert same["normalized_ks"]["statistic"] < 0.25 and same["normalized_ks"]["pvalue"] > 0.05
    shifted, _ = analyze(base, make_study("shifted", n=80, seed=1, shift=0.1), bins=10)  # 0.1 more accurate: past the kernel's whole effect
    assert shifted["ks"]["statistic"] > 0.9 and shifted["ks"]["pvalue"] < 1e-6
    assert shifted["normalized_ks"]["statistic"] > 0.9 and shifted["normalized_ks"]["pvalue"] < 1e-6
    assert shifted["against"]["dimensions"]["kernel"]["best"] == 7


def test_weighted_ks_with_equal_weights_is_scipys_asymptotic_ks():
    a, b = (load_trained(make_study(name, n=n, seed=seed)) for name, n, seed in (("a", 40, 0), ("b", 60, 1)))
    mine = weighted_ks(a, np.full(40, 1 / 40), b, np.full(60, 1 / 60))
    theirs = stats.ks_2samp(a.errors, b.errors, method="asymp")
    assert mine["statistic"] == pytest.approx(theirs.statistic) and mine["pvalue"] == pytest.approx(theirs.pvalue)


def test_normalisation_bins_the_shared_flops_range_and_refuses_an_empty_bin():
    wide, narrow = make_study("wide", n=60, flops_decades=(-2.0, 1.0)), make_study("narrow", n=60, seed=1, flops_decades=(-1.0, 0.0))
    report, _ = analyze(wide, narrow, bins=3)
    lo, hi = report["flops_range"]  # narrow's range: wide's models outside it weigh nothing
    assert 1e8 <= lo < hi <= 1e9 and report["left_out_of_normalized"] > 20 and report["against"]["left_out_of_normalized"] == 0
    assert report["normalized_edf"][-1] == pytest.approx(1.0)
    gap = optuna.create_study(directions=["maximize", "minimize"])  # FLOPs at 1e8 and 1e10 only: the middle bins hold none
    gap.add_trials([create_trial(params={}, distributions={}, values=[0.9, 1e8 if i % 2 else 1e10], user_attrs={"status": "trained"})
                    for i in range(12)])
    refused, _ = analyze(gap, bins=4)
    assert refused["normalized_refused"].startswith("normalised EDF: refused, FLOPs bin 2 of 4 (0.316-1 GFLOPs) holds no trained model of")
    assert refused["normalized_edf"] is None and refused["edf"][-1] == 1.0  # the rest stands


def test_too_few_trained_trials_refused():
    with pytest.raises(ConvspaceError, match=r"study: 'few' holds 9 trained trials; the analysis needs at least 10"):
        analyze(make_study("few", n=9, stopped=3), bins=10)


def test_bias_warnings_name_the_sampler_and_the_stopped_trials():
    report, _ = analyze(make_study("nsga", n=20, sampler="NSGAIISampler", stopped=2), bins=10)
    assert report["sampler"] == "NSGAIISampler" and report["stopped_early"] == 2
    assert "chosen by NSGAIISampler, not drawn at random" in report["warnings"][0] and "--sampler random" in report["warnings"][0]
    assert "2 trials stopped early are left out" in report["warnings"][1]
    unrecorded = make_study("old", n=20, sampler=None)
    trial = unrecorded.ask()  # what NSGA-II leaves on a trial of a study made before the sampler was recorded
    unrecorded._storage.set_trial_system_attr(trial._trial_id, "NSGAIISampler:generation", 0)
    assert analyze(unrecorded, bins=10)[0]["sampler"] == "NSGAIISampler"
    ablation = make_study("roadmap", n=20, sampler=None)
    ablation.set_user_attr("identity", {"kind": "ablation"})
    assert "chosen by an ablation's fixed list" in analyze(ablation, bins=10)[0]["warnings"][0]
    assert "a sampler the study did not record" in analyze(make_study("plain", n=20, sampler=None), bins=10)[0]["warnings"][0]


def test_open_study_records_its_sampler(tmp_path):
    from nas.engine.study import open_study

    study, _ = open_study("s", f"sqlite:///{tmp_path}/s.db", {"space": "x"}, sampler=optuna.samplers.RandomSampler(seed=0))
    assert study.user_attrs["sampler"] == "RandomSampler"


def test_command_json_summary_and_pictures(root, tmp_path):
    out = tmp_path / "report"
    report = json.loads(cli(root, "--study", "base", "--against", "same", "--bins", "2", "--json", "--out", str(out)).stdout)
    assert {"n", "errors", "edf", "normalized_edf", "dimensions", "ks", "normalized_ks", "against"} <= set(report)
    assert report["n"] == 30 and report["against"]["n"] == 30 and set(report["ks"]) == {"statistic", "pvalue"}
    assert {"importance", "best", "good"} <= set(report["dimensions"]["kernel"])
    assert sorted(p.name for p in out.iterdir()) == ["analysis.html", "dimensions.png", "dimensions_against.png", "edf.png"]
    assert (out / "edf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html.unescape((out / "analysis.html").read_text())
    assert page.count("data:image/png;base64,") == 3 and 'src="http' not in page  # offline: everything embedded
    # the page opens with the terminal's summary
    assert "study 'base': 30 trained models" in page and "KS 'base' vs 'same': D " in page and "most important (PED-ANOVA): kernel" in page
    assert "warning: 'base': 1 trials stopped early are left out" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--study", "nope"], "error: study: no study 'nope'"),
     (["--study", "base", "--against", "nope"], "error: study: no study 'nope'"),
     (["--study", "base", "--bins", "0"], "error: bins: must be >= 1, got 0"),
     (["--study", "few"], "error: study: 'few' holds 5 trained trials; the analysis needs at least 10")],
)
def test_command_errors_are_one_line(root, args, message):
    result = cli(root, *args)
    assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_a_stepped_float_reads_as_its_step_in_the_summary():
    from nas.analysis.report import _good

    dim = {"good": (0.15000000000000002, 0.30000000000000004), "best": 0.15000000000000002, "numeric": True, "n": 40}
    assert _good(dim) == "good 0.15-0.3, best 0.15"
    assert _good({**dim, "good": (3, 7), "best": 5}) == "good 3-7, best 5"


def test_a_study_resumed_with_another_sampler_is_no_longer_called_random(tmp_path):
    """A random sweep resumed with TPE: the study says both samplers, and the analysis warns that the sample is biased."""
    from nas.engine.study import open_study

    url = f"sqlite:///{tmp_path / 's.db'}"
    for sampler in (optuna.samplers.RandomSampler(), optuna.samplers.RandomSampler(), optuna.samplers.TPESampler()):
        study, _ = open_study("s", url, {"kind": "test"}, sampler=sampler)
    assert study.user_attrs["sampler"] == "RandomSampler, then TPESampler"
    assert sampler_of(study) == "RandomSampler, then TPESampler"
    open_study("s", url, {"kind": "test"})  # a command that samples nothing (confirm, pareto) changes nothing
    assert sampler_of(optuna.load_study(study_name="s", storage=url)) == "RandomSampler, then TPESampler"
