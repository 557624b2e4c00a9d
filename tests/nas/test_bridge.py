"""The Optuna side of a search without Ray: what the bridge hands out and how it tells Optuna the outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.bridge import BudgetedOptunaSearcher
from nas.search import open_search_study
from nas.settings import SAMPLERS, SearchSettings
from space.choices import Space
from space.config import ArchConfig
from space.cost import arch_cost
from trainers.proxy import ProxySettings

TINY_SPACE = Path(__file__).with_name("tiny_space.yaml")
BUDGET = 5_696_256  # about half of the tiny space at 64 px and 10 classes


def handed_out(tmp_path: Path, sampler: str, study: str) -> list[tuple[ArchConfig, dict]]:
    """Run the bridge as Tune would, with a made-up accuracy (fewer params score higher) instead of training."""
    settings = SearchSettings(study=study, budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage=f"sqlite:///{tmp_path}/{study}.db",
                              proxy=ProxySettings(epochs=2), trials=10, cost_resolution=64, cost_classes=10, sampler=sampler, seed=3)  # fmt: skip
    study_, storage = open_search_study(settings)
    bridge = BudgetedOptunaSearcher(study_, storage, settings)
    out = []
    try:
        for i in range(100):
            suggestion = bridge.suggest(f"t{i}")
            if suggestion is None:
                break
            trial = bridge.live[f"t{i}"]
            out.append((ArchConfig.from_json(suggestion["config"]), dict(trial.user_attrs)))
            bridge.on_trial_complete(f"t{i}", {"acc": 1 / trial.user_attrs["params"], "epoch": 2}, False)
    finally:
        bridge.close()
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
