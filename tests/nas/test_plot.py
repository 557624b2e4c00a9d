"""The front PNG: its scale is set by the trained trials and the budget, whatever the over-budget samples cost."""

from __future__ import annotations

import pytest

from nas.front.plots import plot, plot_range
from tests.conftest import write_study


def test_over_budget_samples_at_huge_flops_do_not_set_the_x_range(tmp_path):
    study = write_study(tmp_path, "s", extra_over_budget=3)  # samples thousands of times the budget
    gflops = {t.user_attrs["status"]: [] for t in study.trials}
    for t in study.trials:
        gflops[t.user_attrs["status"]].append(t.user_attrs["flops"] / 1e9)
    budget = study.user_attrs["budget"] / 1e9
    assert max(gflops["over_budget"]) > 400 * budget
    path = tmp_path / "front.png"
    lo, hi = plot(study, str(path), study.user_attrs["budget"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trained = gflops["trained"] + gflops["stopped"]
    assert lo <= min(trained) and budget < hi <= 1.5 * max(trained + [budget])


@pytest.mark.parametrize(
    "gflops, budget, expected",
    [
        ([1.0, 2.0, 3.5], 4.5, (0.0, 5.4, False)),  # within a decade: linear from 0, room past the budget
        ([0.05, 0.2, 3.0], 4.5, (0.05 / 1.3, 4.5 * 1.35, True)),  # over a decade: log, or 0.05 would sit on 0
        ([], 4.5, (0.0, 5.4, False)),  # nothing trained yet: the budget alone
        ([], None, (0.0, 1.0, False)),
    ],
)
def test_plot_range_comes_from_trained_flops_and_the_budget(gflops, budget, expected):
    assert plot_range(gflops, budget) == pytest.approx(expected)


def test_the_hypervolume_history_follows_the_order_trials_finished_in_not_their_numbers(tmp_path):
    import datetime

    import optuna

    from nas.front.plots import hypervolume_history

    study = optuna.create_study(directions=["maximize", "minimize"])
    start = datetime.datetime(2026, 1, 1)
    # trial 0 (a big network) finished last; trials 1 and 2 (cheap, in parallel) before it
    for volume, minutes in ((0.5, 9), (0.2, 1), (0.3, 2)):
        study.add_trial(optuna.trial.FrozenTrial(
            number=0, trial_id=0, state=optuna.trial.TrialState.COMPLETE, value=None, values=[0.5, 1e9], params={}, distributions={},
            user_attrs={"hypervolume": volume}, system_attrs={}, intermediate_values={}, datetime_start=start,
            datetime_complete=start + datetime.timedelta(minutes=minutes)))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"status": "over_budget"}))
    assert hypervolume_history(study) == [0.2, 0.3, 0.5]
    path = tmp_path / "front.png"
    plot(study, str(path), None)  # drawn beside the front when recorded
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_live_clock_tells_the_time_budgets_remainder_or_an_estimate_labelled_as_one():
    import io

    from rich.console import Console

    from nas.engine.events import SearchOpened, TrialEnded
    from nas.front.live import SearchView

    budgeted = SearchView(Console(file=io.StringIO()), study="s", epochs=3, live=False, time_budget=300)
    budgeted(SearchOpened(remaining=5, trials=5))
    budgeted.started_at -= 100
    assert budgeted.eta() in ("3m20s left of the 5m00s time budget", "3m19s left of the 5m00s time budget")  # a second may tick
    budgeted.started_at -= 400
    assert budgeted.eta() == "0s left of the 5m00s time budget"
    paced = SearchView(Console(file=io.StringIO()), study="s", epochs=3, live=False)
    paced(SearchOpened(remaining=5, trials=5))
    assert paced.eta() == "an estimate of the time left after the first trial ends"
    paced.started_at -= 100
    paced(TrialEnded(0, "trained", acc=0.5, epoch=3))
    assert paced.eta().startswith("about 6m4") and paced.eta().endswith("left (estimate at the pace so far)")
