"""`fidelity`: the same seeded networks trained with the proxy and a longer schedule, compared by rank.

The rank statistics and the sampling are pure functions tested here directly; one end-to-end run goes through Ray
on synthetic data with the tiny space, and its rerun must train only what the study is missing."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy.stats import bootstrap, kendalltau

from nas.engine.study import open_study
from nas.evaluate.fidelity import LONG, PROXY, FidelitySettings, fidelity_identity, missing, sample_in_budget
from nas.evaluate.ranking import agreement, bootstrap_ci, kendall_tau_b, top_k_overlap
from space.choices import Space
from space.cost import arch_cost
from space.errors import ConvspaceError
from trainers.settings import ProxySettings

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("tiny_space.yaml")


def test_vectorised_tau_b_is_scipys_kendalltau_with_ties_and_undefined_for_a_constant_column():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (200, 9)).astype(float), rng.integers(0, 4, (200, 9)).astype(float)  # many ties
    x[0] = 1.0  # a constant row: tau undefined
    expected = [kendalltau(a, b).statistic for a, b in zip(x, y)]
    assert np.allclose(kendall_tau_b(x, y), expected, equal_nan=True) and np.isnan(kendall_tau_b(x, y)[0])


@pytest.mark.filterwarnings("ignore::scipy.stats.DegenerateDataWarning")
def test_the_bootstrap_interval_survives_resamples_where_scipys_is_nan():
    # Three networks at chance tie: some resamples draw only them, where tau is undefined. scipy's paired bootstrap
    # then gives NaN for the whole interval (why nas.evaluate.ranking resamples itself); ours leaves those resamples out.
    proxy, long = [0.1, 0.1, 0.1, 0.6, 0.8, 0.9], [0.2, 0.5, 0.3, 0.7, 0.6, 0.9]
    scipys = bootstrap((proxy, long), lambda a, b: kendalltau(a, b).statistic, paired=True, vectorized=False,
                       n_resamples=2000, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert np.isnan(scipys.low)
    (lo, hi), used = bootstrap_ci(proxy, long, seed=0)
    assert -1 <= lo < kendalltau(proxy, long).statistic < hi <= 1 and 3000 < used < 4000
    assert bootstrap_ci(proxy, long, seed=0) == ((lo, hi), used)  # seeded
    assert bootstrap_ci(proxy, long, seed=1) != ((lo, hi), used)


def test_agreement_of_identical_reversed_and_unrelated_rankings():
    up = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    same = agreement(up, [2 * v for v in up])
    assert same.kendall_tau == pytest.approx(1) and same.ci95 == pytest.approx((1, 1)) and same.spearman == pytest.approx(1)
    assert same.top_k_overlap == same.top_k == 3
    reversed_ = agreement(up, up[::-1], top_k=2)
    assert reversed_.kendall_tau == pytest.approx(-1) and reversed_.ci95[1] == pytest.approx(-1) and reversed_.top_k_overlap == 0
    assert same.p_value == pytest.approx(2 / 720)  # the exact test: 2 of the 6! orders are as extreme
    rng = np.random.default_rng(3)
    noise = agreement(rng.random(10), rng.random(10))
    assert noise.ci95[0] < 0 < noise.ci95[1] and noise.p_value > 0.05  # ten unrelated networks: 0 cannot be ruled out
    assert agreement(up, up, top_k=10).top_k == 6  # k is capped at n
    assert noise.to_dict()["ci95"] == list(noise.ci95)
    four = agreement(up[:4], up[:4])  # a perfect ranking of 4 is not significant at 5%: no interval, though the bootstrap gives [1, 1]
    assert four.kendall_tau == pytest.approx(1) and np.isnan(four.ci95).all() and four.resamples == 0


def test_top_k_overlap_breaks_ties_by_order():
    assert top_k_overlap([0.9, 0.8, 0.1, 0.2], [0.1, 0.9, 0.8, 0.2], 2) == 1
    assert top_k_overlap([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], 1) == 0  # the first of the tied is taken


def test_sampling_is_seeded_within_budget_distinct_and_keeps_the_first_networks_for_a_larger_n():
    space, budget = Space.from_yaml("default"), 4_500_000_000
    five = sample_in_budget(space, 5, budget, seed=7)
    assert [c.hash for c in sample_in_budget(space, 3, budget, seed=7)] == [c.hash for c in five[:3]]
    assert len({c.hash for c in five}) == 5 and all(arch_cost(c).flops <= budget for c in five)
    assert [c.hash for c in sample_in_budget(space, 5, budget, seed=8)] != [c.hash for c in five]
    with pytest.raises(ConvspaceError, match=r"^n: only \d+ distinct networks of space 'tiny'"):
        sample_in_budget(Space.from_yaml(TINY), 200, 10**12, seed=0)  # the tiny space has 96 points


def settings(**changes):
    base = dict(study="f", storage="sqlite:///f.db", space=Space.from_yaml(TINY), budget=10**9, proxy=ProxySettings(epochs=1),
                long_epochs=3, long_train_images=768)
    return FidelitySettings(**{**base, **changes})


def test_the_long_schedule_is_the_proxy_trained_longer_on_the_same_data():
    s = settings(proxy=ProxySettings(epochs=1, train_images=256, data="synthetic", lr=1e-3, seed=4), long_train_images=None)
    assert (s.long.epochs, s.long.train_images, s.long.data, s.long.lr, s.long.seed) == (3, None, "synthetic", 1e-3, 4)


@pytest.mark.parametrize("changes, message", [
    ({"long_epochs": 1}, "long-epochs: the long schedule must train longer than the proxy (1 epochs of 768 images)"),
    ({"long_epochs": 5, "long_train_images": 100}, "long-epochs: the long schedule must train longer"),
    ({"long_train_images": 0}, "long-train-images: must be >= 1"),
    ({"n": 4}, "n: must be >= 5"),
    ({"top_k": 9}, "top-k: must be between 1 and --n (8)"),
])
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(ConvspaceError) as err:
        settings(**changes)
    assert str(err.value).startswith(message), str(err.value)


def test_a_study_resumes_with_other_proxy_settings_but_not_with_another_long_schedule_or_budget(tmp_path):
    url = f"sqlite:///{tmp_path}/f.db"
    open_study("f", url, fidelity_identity(settings()))
    open_study("f", url, fidelity_identity(settings(proxy=ProxySettings(epochs=2, train_images=256, threads=2))))
    for changed, named in (({"long_epochs": 4}, "long.epochs: 3 in the study, 4 now"), ({"budget": 2 * 10**9}, "budget: 1 GFLOPs in the study")):
        with pytest.raises(ConvspaceError, match=re.escape(named)):
            open_study("f", url, fidelity_identity(settings(**changed)))


def cli(cwd, *args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "fidelity", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_mistakes_are_one_line_before_torch_or_ray_is_imported(tmp_path):
    mistakes = [
        ["--budget", "1KFLOPs"],  # below every network
        ["--budget", "4.5G", "--long-epochs", "1"],
        ["--budget", "4.5G", "--data", "/no/such"],
        ["--budget", "4.5G", "--n", "100000", "--space", str(TINY)],
    ]
    # one process for all of them (each start costs seconds): torch and Ray must still be absent after the last
    code = ("import json, sys; import cli\nfor args in json.loads(sys.argv[1]):\n    sys.argv = ['cli.py', 'fidelity', *args]\n"
            "    try:\n        cli.main()\n    except SystemExit as e:\n        print(e.code)\n"
            "print(sorted(m for m in ('torch', 'timm', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(mistakes)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.split("\n")[:5] == ["2", "2", "2", "2", "[]"], result.stdout + result.stderr
    errors = result.stderr.splitlines()
    assert len(errors) == 4 and all(e.startswith("error: ") for e in errors), result.stderr
    assert errors[0].startswith("error: budget: ") and errors[1].startswith("error: long-epochs: ") and errors[3].startswith("error: n: only ")
    assert not (tmp_path / "studies").exists()


def test_a_run_trains_only_what_the_study_lacks_and_new_proxy_settings_reuse_the_long_runs():
    networks = sample_in_budget(Space.from_yaml(TINY), 5, 10**9, seed=0)
    s = settings(n=5)
    study = optuna.create_study(directions=["maximize", "minimize"])

    def trained(kind, proxy, samples):
        for i in samples:
            study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0], user_attrs={
                "fidelity": kind, "sample": i, "hash": networks[i].hash, "proxy": proxy.to_dict()}))

    assert [i for i, _ in missing(study, networks, PROXY, s.proxy)] == [0, 1, 2, 3, 4]
    trained(PROXY, s.proxy, [0, 1])
    trained(LONG, s.long, [0, 1, 2])
    trained(PROXY, dataclasses.replace(s.proxy, threads=4), [2])  # threads change how fast, not what is measured
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={
        "fidelity": PROXY, "sample": 3, "hash": networks[3].hash, "proxy": s.proxy.to_dict()}))  # failed: trained again
    assert [i for i, _ in missing(study, networks, PROXY, s.proxy)] == [3, 4]
    assert [i for i, _ in missing(study, networks, LONG, s.long)] == [3, 4]
    other = dataclasses.replace(s.proxy, train_images=256)
    assert [i for i, _ in missing(study, networks, PROXY, other)] == [0, 1, 2, 3, 4]
    assert [i for i, _ in missing(study, networks, LONG, settings(n=5, proxy=other).long)] == [3, 4]  # the same long runs


def test_fidelity_trains_both_schedules_through_ray_and_a_rerun_trains_nothing(tmp_path):
    def run():
        return cli(tmp_path, "--space", str(TINY), "--budget", "1G", "--n", "5", "--data", "synthetic", "--batch-size", "16",
                   "--train-images", "32", "--long-epochs", "2", "--top-k", "2", "--json")

    first = run()
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["n"] == 5 and len(report["pairs"]) == 5 and report["top_k"] == 2 and -1 <= report["ci95"][0] <= report["ci95"][1] <= 1
    assert {"kendall_tau", "p_value", "spearman", "top_k_overlap", "proxy_minutes", "long_minutes"} <= set(report)
    assert report["proxy_settings"]["epochs"] == 1 and report["long_settings"]["epochs"] == 2
    storage = f"sqlite:///{tmp_path}/studies/fidelity.db"
    study = optuna.load_study(study_name="fidelity", storage=storage)
    kinds = sorted((t.user_attrs["fidelity"], t.user_attrs["sample"], t.user_attrs["epochs"]) for t in study.trials)
    assert kinds == [("long", i, 2) for i in range(5)] + [("proxy", i, 1) for i in range(5)]
    by_trial = {t.number: t.values[0] for t in study.trials}
    assert all((p["proxy"], p["long"]) == (by_trial[p["proxy_trial"]], by_trial[p["long_trial"]]) for p in report["pairs"])
    # a rerun finds the same networks in the study: nothing is trained and the report is the same
    again = run()
    assert again.returncode == 0 and json.loads(again.stdout) == report
    assert len(optuna.load_study(study_name="fidelity", storage=storage).trials) == 10
