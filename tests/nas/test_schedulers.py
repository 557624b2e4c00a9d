"""ParetoASHA: the rung rule on constructed rungs, against Ray's own ASHA given the same results; one real Tune run."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
from optuna.study._multi_objective import _fast_non_domination_rank
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from nas.engine.schedulers import ParetoASHA, pareto_order

G = 1e9
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP

# One rung's results, (accuracy, FLOPs), in the order the trials reach it. Front 0 is {8, 6, 4}: the most accurate
# net and the two cheapest; 3 and 0 (96% and 95%) are dominated by 8 alone, the rest lie further behind.
TABLE = [(0.95, 4.0 * G), (0.94, 4.5 * G), (0.93, 4.2 * G), (0.96, 4.4 * G), (0.90, 0.5 * G),
         (0.92, 4.8 * G), (0.85, 0.3 * G), (0.80, 4.9 * G), (0.97, 3.0 * G)]


@dataclass(frozen=True)
class FakeTrial:
    """What the schedulers read of a Tune trial."""

    trial_id: str


def pareto(**changes: float) -> ParetoASHA:
    """Rungs at epochs 1 and 3 (max_t 9, eta 3), the objectives the search uses."""
    return ParetoASHA(**{"metrics": ("acc", "flops"), "modes": ("max", "min"), "time_attr": "epoch", "max_t": 9,
                         "grace_period": 1, "reduction_factor": 3, **changes})


def asha() -> ASHAScheduler:
    """Ray's accuracy-only ASHA with the same rungs."""
    return ASHAScheduler(metric="acc", mode="max", time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3)


def feed(scheduler: TrialScheduler, results: list[tuple[float, float]], epoch: int = 1, first: int = 0) -> list[str]:
    """Each (acc, flops) as the result of trial t<first + i> at `epoch`, in order; the scheduler's decisions."""
    decisions = []
    for i, (acc, flops) in enumerate(results, start=first):
        trial = FakeTrial(f"t{i}")
        if epoch == 1:
            scheduler.on_trial_add(None, trial)
        decisions.append(scheduler.on_trial_result(None, trial, {"epoch": epoch, "acc": acc, "flops": flops}))
    return decisions


def test_optuna_non_domination_rank_as_we_use_it():
    """The private Optuna function behind the ranks: ties share a rank, a positive penalty ranks after all."""
    loss = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 2.0], [0.0, 1.0]])
    assert _fast_non_domination_rank(loss).tolist() == [0, 0, 1, 2, 0]
    assert _fast_non_domination_rank(loss, penalty=np.array([0.0, 0.0, 0.0, 0.0, 1.0])).tolist() == [0, 0, 1, 2, 3]


def test_order_is_by_front_then_spread():
    """Fronts in rank order; inside one, the most accurate first, then the point farthest from those placed."""
    assert pareto_order(TABLE, ["max", "min"]) == [8, 6, 4, 3, 0, 1, 2, 5, 7]
    assert pareto_order([], ["max", "min"]) == []


def test_cheap_non_dominated_trial_continues_where_asha_stops_it():
    """(a) A 0.5 GFLOPs net at 90% reaches the rung after four 4+ GFLOPs nets at 93-96%: ASHA stops it, we keep it."""
    sequence = TABLE[:5]
    assert feed(asha(), sequence) == [CONTINUE, STOP, STOP, CONTINUE, STOP]
    # t1 continues as the second result (fewer than eta recorded); t2 is dominated by t0 and ranks last of three.
    assert feed(pareto(), sequence) == [CONTINUE, CONTINUE, STOP, CONTINUE, CONTINUE]


def test_dominated_trial_stops_where_asha_keeps_it():
    """(b) 96% at 6 GFLOPs is dominated by 97% at 3 GFLOPs: ASHA keeps it on its accuracy, we stop it."""
    front = [(0.97, 3.0 * G), (0.90, 0.5 * G), (0.85, 0.3 * G), (0.80, 0.2 * G), (0.75, 0.1 * G)]
    dominated = (0.96, 6.0 * G)
    assert feed(asha(), [*front, dominated])[-1] == CONTINUE
    assert feed(pareto(), [*front, dominated])[-1] == STOP


@pytest.mark.parametrize("last", range(len(TABLE)))
def test_top_third_of_nine_continues(last: int):
    """(c) eta 3, nine results at a rung: the one judged last continues exactly when it is in the top 3 by rank
    (front 0: 8, 6, 4), not the top 3 by accuracy (8, 3, 0)."""
    others = [r for i, r in enumerate(TABLE) if i != last]
    scheduler = pareto()
    feed(scheduler, others)
    decision = feed(scheduler, [TABLE[last]], first=len(TABLE))[0]
    assert decision == (CONTINUE if last in (8, 6, 4) else STOP)


def test_tie_break_prefers_spread():
    """(d) In one front the point that fills a gap outranks a more accurate one beside a point already kept."""
    a, b, c = (0.96, 4.4 * G), (0.955, 4.3 * G), (0.90, 0.5 * G)  # b sits next to a; c is the cheap end
    # Neither accuracy (a, b, c) nor arrival (b, c, a) gives this order.
    assert pareto_order([b, c, a], ["max", "min"]) == [2, 1, 0]
    behind = [(0.85, 5.0 * G), (0.84, 5.1 * G), (0.83, 5.2 * G)]  # dominated by a: six results, two continue
    assert feed(pareto(), [a, b, *behind, c])[-1] == CONTINUE
    assert feed(pareto(), [a, c, *behind, b])[-1] == STOP


def test_fewer_results_than_eta_continue():
    """Two results cannot be cut 1 in 3: the second continues however poor; the third is judged."""
    assert feed(pareto(), [(0.9, 1 * G), (0.1, 9 * G), (0.05, 9.5 * G)]) == [CONTINUE, CONTINUE, STOP]


def test_exact_tie_continues_as_with_asha():
    """A result equal to a kept one keeps its place, as ASHA keeps a trial equal to its cutoff."""
    same = [(0.9, 1 * G)] * 3
    assert feed(pareto(), same) == feed(asha(), same) == [CONTINUE] * 3


def test_nan_objective_ranks_last():
    """A diverged training's NaN accuracy does not put it on the front, even at the lowest FLOPs."""
    assert pareto_order([(0.9, 2 * G), (math.nan, 0.1 * G), (0.8, 3 * G)], ["max", "min"]) == [0, 2, 1]
    assert feed(pareto(), [(0.9, 2 * G), (0.8, 3 * G), (math.nan, 0.1 * G)])[-1] == STOP


def test_result_without_flops_is_an_error_naming_it():
    """A trainable that reports no FLOPs fails at its first rung, saying what to report."""
    scheduler = pareto()
    trial = FakeTrial("t0")
    # Before the grace period nothing is judged, so the search's epoch-0 reports (no accuracy yet) pass.
    assert scheduler.on_trial_result(None, trial, {"epoch": 0, "trainable_seconds": 1.0}) == CONTINUE
    assert scheduler.on_trial_result(None, trial, {"acc": 0.9}) == CONTINUE  # not a training result: no epoch
    with pytest.raises(ValueError, match=r"trial t0 reported epoch=1 without flops; the trainable must report acc, flops in every result"):
        scheduler.on_trial_result(None, trial, {"epoch": 1, "acc": 0.9})
    with pytest.raises(ValueError, match="non-numeric"):
        scheduler.on_trial_result(None, trial, {"epoch": 1, "acc": "high", "flops": G})


def test_judged_once_per_rung_at_the_highest_reached():
    """Later results below the next rung pass unjudged; one that skips rungs is judged at the highest it reaches;
    max_t stops."""
    scheduler = pareto()
    feed(scheduler, TABLE[:3])
    assert feed(scheduler, [(0.10, 9 * G)], epoch=2) == [CONTINUE]  # t0 again, already judged at epoch 1
    assert feed(scheduler, [(0.10, 9 * G)], epoch=4, first=9) == [CONTINUE]  # t9's first result, at rung 3: alone there
    assert scheduler.debug_string().splitlines()[1] == "epoch 1: 3 results | epoch 3: 1 results"
    assert feed(scheduler, [TABLE[0]], epoch=9) == [STOP]


def test_state_survives_pickling_and_save_restore(tmp_path):
    """Tune pickles the scheduler with the tuner: a copy (pickled, or saved and restored) decides as the original."""
    scheduler = pareto()
    feed(scheduler, TABLE[:6])
    copy = pickle.loads(pickle.dumps(scheduler))
    scheduler.save(str(tmp_path / "scheduler.pkl"))
    restored = pareto()
    restored.restore(str(tmp_path / "scheduler.pkl"))
    rest = TABLE[6:]
    assert feed(copy, rest, first=6) == feed(restored, rest, first=6) == feed(scheduler, rest, first=6) == [CONTINUE, STOP, CONTINUE]


def test_bad_arguments_and_tune_config_metric_are_refused():
    """One objective, an unknown mode or a grace period past max_t fail at once; TuneConfig may not set a metric."""
    with pytest.raises(ValueError, match="two or more"):
        ParetoASHA(metrics=("acc",), modes=("max",))
    with pytest.raises(ValueError, match="must each be one of max, min"):
        ParetoASHA(modes=("max", "lowest"))
    with pytest.raises(ValueError, match="grace_period 5"):
        ParetoASHA(grace_period=5, max_t=3)
    assert pareto().set_search_properties(None, None) is True
    assert pareto().set_search_properties("acc", "max") is False


@pytest.fixture(scope="module")
def local_ray():
    """Ray on two CPUs for this module's Tune run, started as a search starts it (loopback, its own token)."""
    import ray

    from nas.engine.ray_cluster import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()


def test_tune_run_stops_the_dominated_trials(local_ray, tmp_path):
    """A real Tuner: nine trials one at a time, each reporting TABLE's accuracy and FLOPs for 3 epochs; those
    ParetoASHA stops at epoch 1 are the dominated ones (2, 5, 7), not the cheap ones ASHA would stop (4, 6)."""
    from ray import tune

    table = list(TABLE)

    def trainable(config: dict) -> None:  # defined here so Ray ships it by value: workers need not import tests/
        acc, flops = table[config["i"]]
        for epoch in (1, 2, 3):
            tune.report({"epoch": epoch, "acc": acc + 0.001 * epoch, "flops": flops})

    tuner = tune.Tuner(
        trainable,
        param_space={"i": tune.grid_search(list(range(len(table))))},
        # one trial at a time, so they reach the rung in table order and each decision is the one computed above
        tune_config=tune.TuneConfig(scheduler=ParetoASHA(max_t=3, grace_period=1, reduction_factor=3), max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    epochs = {r.config["i"]: r.metrics["epoch"] for r in results}
    assert epochs == {i: 1 if i in (2, 5, 7) else 3 for i in range(len(table))}
