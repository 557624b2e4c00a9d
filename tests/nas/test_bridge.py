"""The Optuna side of a search without Ray: what the bridge hands out and how it tells Optuna the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.engine.bridge import BudgetedOptunaSearcher
from nas.engine.search import open_search_study
from nas.engine.settings import SAMPLERS, SearchSettings
from space.choices import Space
from space.config import ArchConfig
from space.cost import arch_cost
from trainers.proxy import ProxySettings

TINY_SPACE = Path(__file__).with_name("tiny_space.yaml")
BUDGET = 5_696_256  # about half of the tiny space at 64 px and 10 classes


def handed_out(tmp_path: Path, sampler: str, study: str) -> list[tuple[ArchConfig, dict]]:
    """Run the bridge as Tune would, with a made-up accuracy (fewer params score higher) instead of training."""
    settings = SearchSettings(study=study, budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage=f"sqlite:///{tmp_path}/{study}.db",
                              proxy=ProxySettings(epochs=2), trials=10, cost_resolution=64, cost_classes=10, sampler=sampler, seed=3)
    study_, storage = open_search_study(settings)
    bridge = BudgetedOptunaSearcher(study_, storage, settings)
    out = []
    with bridge:
        for i in range(100):
            suggestion = bridge.suggest(f"t{i}")
            if suggestion is None:
                break
            trial = bridge.live[f"t{i}"]
            out.append((ArchConfig.from_json(suggestion["config"]), dict(trial.user_attrs)))
            bridge.on_trial_complete(f"t{i}", {"acc": 1 / trial.user_attrs["params"], "epoch": 2}, False)
    return out


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_hands_out_distinct_in_budget_configs_costed_at_the_target_size_and_is_seeded(tmp_path, sampler):
    first = handed_out(tmp_path, sampler, "a")
    assert len(first) == 10  # past NSGA-II's first generation and TPE's start-up trials (8 each)
    for cfg, attrs in first:
        assert cfg.num_classes == 10 and attrs["flops"] == arch_cost(cfg, 64).flops <= BUDGET
    assert len({cfg.hash for cfg, _ in first}) == 10
    again = handed_out(tmp_path, sampler, "b")  # a new study, the same seed
    assert [cfg.hash for cfg, _ in again] == [cfg.hash for cfg, _ in first]


def test_drivers_sharing_a_study_get_their_own_sampler_seeds(tmp_path):
    from nas.engine.study import driver_seed

    settings = SearchSettings(study="shared", budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage=f"sqlite:///{tmp_path}/shared.db",
                              proxy=ProxySettings(epochs=2), trials=10, cost_resolution=64, cost_classes=10, seed=3)
    bridges = [BudgetedOptunaSearcher(*open_search_study(settings), settings) for _ in range(2)]  # two drivers, one study
    with bridges[0], bridges[1]:
        assert [b.driver for b in bridges] == [0, 1]
        first = [b.suggest(f"t{i}") for i, b in enumerate(bridges)]
        assert first[0]["config"] != first[1]["config"]  # not in lockstep: each proposes its own points
        assert [b.live[f"t{i}"].user_attrs["driver"] for i, b in enumerate(bridges)] == [0, 1]
    assert driver_seed(3, 0) == 3 and len({driver_seed(3, d) for d in range(50)}) == 50  # the first driver keeps --seed
    assert driver_seed(3, 1) == driver_seed(3, 1) != driver_seed(4, 1)


def test_drivers_starting_together_claim_distinct_numbers(tmp_path):
    import threading

    from nas.engine.study import claim_driver

    settings = SearchSettings(study="race", budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage=f"sqlite:///{tmp_path}/race.db")
    _, storage = open_search_study(settings)
    study_id, start, claimed = storage.get_study_id_from_name("race"), threading.Barrier(4), []

    def driver() -> None:
        start.wait()
        claimed.append(claim_driver(storage, study_id))

    threads = [threading.Thread(target=driver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == [0, 1, 2, 3]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_out_of_band_proposals_are_stored_with_their_constraints_and_never_replaced(tmp_path, sampler):
    """An absolute space: a proposal outside the band is stored (refused, with Optuna's constraints, which TPE models)
    and the sampler proposes again; every network trained is the sampler's own proposal, not a random stand-in."""
    import optuna

    from nas.front.pareto import counts

    band = (BUDGET // 2, BUDGET)  # a narrow band: most of the tiny space is outside it, on both sides
    settings = SearchSettings(study="band", budget=BUDGET, flops_min=band[0], space=Space.from_yaml(TINY_SPACE),
                              storage=f"sqlite:///{tmp_path}/band.db", proxy=ProxySettings(epochs=2), trials=10, cost_resolution=64,
                              cost_classes=10, sampler=sampler, seed=3)
    study, storage = open_search_study(settings)
    bridge = BudgetedOptunaSearcher(study, storage, settings)
    handed = []
    with bridge:
        for i in range(10):
            suggestion = bridge.suggest(f"t{i}")
            trial = bridge.live[f"t{i}"]
            handed.append(trial.user_attrs["flops"])
            bridge.on_trial_complete(f"t{i}", {"acc": 1 / trial.user_attrs["params"], "epoch": 2, "flops": suggestion["flops"]}, False)
    assert all(band[0] <= f <= band[1] for f in handed)
    study = optuna.load_study(study_name="band", storage=settings.storage)
    stored = [t for t in study.trials if t.user_attrs.get("status") in ("over_budget", "under_band")]
    assert stored  # this band refuses some proposals of every sampler
    for t in stored:
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.constraints == {"flops_over_budget": t.user_attrs["flops"] - BUDGET, "flops_under_band": band[0] - t.user_attrs["flops"]}
    tally = counts(study)
    for status in ("over_budget", "under_band"):
        assert bridge.rejected.get(status, 0) == tally.get(status, 0) == sum(t.user_attrs.get("status") == status for t in stored)
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert {t.user_attrs["proposed_by"] for t in trained} == {"random" if sampler == "random" else "sampler"}
    assert not any(k.startswith("rejected_") for k in study.user_attrs)  # nothing is drawn behind the sampler's back


def test_hypervolume_is_the_staircase_area_under_the_budget_and_each_finished_trial_records_it(tmp_path):
    import optuna

    from nas.engine.ledger import hypervolume

    assert hypervolume([], 10) == 0 and hypervolume([(0, 1.0)], 10) == 1
    assert hypervolume([(5, 0.5)], 10) == pytest.approx(0.25)  # (1 - 0.5) * 0.5
    # (0.2, 0.6) and (0.5, 0.8): 0.3 * 0.6 + 0.5 * 0.8; a dominated point and one over the budget add nothing
    assert hypervolume([(2, 0.6), (5, 0.8), (6, 0.5), (30, 0.99)], 10) == pytest.approx(0.58)
    handed_out(tmp_path, "random", "hv")
    study = optuna.load_study(study_name="hv", storage=f"sqlite:///{tmp_path}/hv.db")
    history = [t.user_attrs["hypervolume"] for t in study.trials if "epochs" in t.user_attrs]
    assert len(history) == 10 and history[-1] > 0 and all(b >= a * (1 - 1e-9) for a, b in zip(history, history[1:]))  # never falls
    points = [(t.values[1], t.values[0]) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert study.user_attrs["hypervolume"] == history[-1] == pytest.approx(hypervolume(points, BUDGET))


def test_points_whose_dilated_convs_pad_past_their_maps_at_the_proxy_resolution_are_refused_as_unfit(tmp_path):
    from nas.front.pareto import counts
    from space.cost import check_fits

    dilated = tmp_path / "dilated.yaml"
    dilated.write_text(TINY_SPACE.read_text() + "  dilation: {choice: [1, 4], per_stage: true}\n")
    settings = SearchSettings(study="d", budget=10**12, space=Space.from_yaml(dilated), storage=f"sqlite:///{tmp_path}/d.db",
                              proxy=ProxySettings(epochs=1, resolution=32), trials=8, cost_resolution=64, cost_classes=10,
                              sampler="random", seed=0)
    study, storage = open_search_study(settings)
    bridge = BudgetedOptunaSearcher(study, storage, settings)
    with bridge:
        for i in range(8):
            cfg = ArchConfig.from_json(bridge.suggest(f"t{i}")["config"])
            check_fits(cfg, 32)  # every network handed out trains as the network its FLOPs describe
            bridge.on_trial_complete(f"t{i}", {"acc": 0.5, "epoch": 1}, False)
    tally = counts(study)
    # a random draw of four stages with dilation 1 or 4 mostly pads past a 32 px proxy's small maps: refused, stored or counted
    assert tally["trained"] == 8 and tally.get("unfit", 0) >= 1 and bridge.rejected["unfit"] == tally["unfit"]


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_a_fitted_search_trains_the_warm_start_then_its_samplers_own_fitted_proposals(tmp_path, sampler):
    """The default space at 4.5 GFLOPs: the published networks first, then every trained network is the sampler's own
    proposal scaled onto its target, and refused proposals stay few (the issue's bar: 0.5 per trained trial)."""
    import optuna

    from nas.engine.warm_start import enqueue_warm_start
    from space.fitting import TARGET

    budget = 4_500_000_000
    settings = SearchSettings(study="fit", budget=budget, space=Space.from_yaml("default"), storage=f"sqlite:///{tmp_path}/fit.db",
                              proxy=ProxySettings(epochs=2), trials=16, sampler=sampler, seed=0)
    study, storage = open_search_study(settings)
    warm = enqueue_warm_start(study, settings.space, settings.band)
    assert warm[:2] == ["convnext_tiny", "resnet50"] and len(warm) == 4
    assert enqueue_warm_start(study, settings.space, settings.band) == []  # once per study
    from nas.engine.warm_start import warm_start_size

    assert [warm_start_size(n) for n in (3, 12, 16, 100)] == [1, 4, 4, 4]  # a short search stays mostly the sampler's
    bridge = BudgetedOptunaSearcher(study, storage, settings)
    trained = []
    with bridge:
        for i in range(16):
            bridge.suggest(f"t{i}")
            trial = bridge.live[f"t{i}"]
            trained.append(dict(trial.user_attrs, params_=dict(trial.params)))
            # a stand-in accuracy that depends on the architecture: wider, deeper networks score higher
            bridge.on_trial_complete(f"t{i}", {"acc": min(0.99, trial.user_attrs["params"] / 3e7), "epoch": 2}, False)
    assert [t["proposed_by"] for t in trained[:4]] == ["warm_start"] * 4 and [t["warm_start"] for t in trained[:4]] == warm
    assert {t["proposed_by"] for t in trained[4:]} == {"sampler"}
    for t in trained:
        assert t["flops"] <= t["flops_target_flops"] <= budget or t["proposed_by"] == "warm_start"
        assert TARGET in t["params_"] and "base_width" not in t["params_"]
    assert trained[0]["config"] == __import__("space.presets", fromlist=["PRESETS"]).PRESETS["convnext_tiny"].to_json()
    study = optuna.load_study(study_name="fit", storage=settings.storage)
    assert study.user_attrs["warm_started"] == warm  # the name on disk, as studies made before nas.engine.record hold it
    if sampler == "nsga2":  # the warm start is part of NSGA-II's first population (Optuna files only what it samples)
        assert [t.system_attrs.get("NSGAIISampler:generation") for t in study.trials[:8]] == [0] * 8
    never_trained = [t for t in study.trials if t.user_attrs.get("status") in ("infeasible", "duplicate", "unfit")]
    assert len(never_trained) <= 0.5 * len(trained)
    for t in never_trained:
        assert t.state == optuna.trial.TrialState.PRUNED and "flops_over_budget" in t.constraints


def test_the_ledger_reads_only_what_changed_and_agrees_with_a_full_read_of_the_study(tmp_path):
    """The ledger reads the study once, then only new and open trials: what another process stores meanwhile (a repeat
    that lowers the front's best mean, a trial it starts training) is in its next count, duplicate check and hypervolume,
    which are those of a full read."""
    import optuna

    from nas.engine.ledger import StudyLedger
    from nas.engine.record import TrialRecord, counts_toward_total, outcome_attrs
    from nas.evaluate.confirm import repeat_trial
    from nas.front.pareto import front, study_hypervolume
    from tests.nas.lived_study import lived_study

    def full_read(study: optuna.Study) -> tuple[int, set[str]]:
        trials = [t for t in study.get_trials(deepcopy=False) if counts_toward_total(t)]
        return len(trials), {TrialRecord(t).hash for t in trials}

    study, url = lived_study(tmp_path)
    ledger = StudyLedger(study)
    assert ledger.look() == full_read(study) and ledger.look()[0] > 0
    before = study_hypervolume(study)
    assert ledger.hypervolume(BUDGET) == pytest.approx(before, abs=1e-12)
    other = optuna.load_study(study_name="lived", storage=url)  # another process, its own connections
    best = front(other)[-1]
    other.add_trial(repeat_trial(best, 7, outcome_attrs({"acc": 0.01, "epoch": 3}, epochs=3, proxy_epochs=3)))
    running = other.ask()
    TrialRecord(running).write({"config": TrialRecord(best).config, "hash": "a-config-being-trained", "accepted": True})
    now = optuna.load_study(study_name="lived", storage=url)
    assert study_hypervolume(now) < before and ledger.hypervolume(BUDGET) == pytest.approx(study_hypervolume(now), abs=1e-12)
    assert ledger.look() == full_read(now)
    assert ledger.holds("a-config-being-trained") and not ledger.holds("a-config-being-trained", skip=running.number)
