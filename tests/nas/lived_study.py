"""A study as a search on a busy machine leaves it, written through the bridge without Ray (as tests/nas/test_bridge.py
drives it): every way a trial can end, a retry of a trial cut short, a repeat with another seed, refused samples."""

from __future__ import annotations

from pathlib import Path

import optuna

from nas.engine.bridge import BudgetedOptunaSearcher
from nas.engine.record import outcome_attrs
from nas.engine.search import open_search_study
from nas.engine.settings import SearchSettings
from nas.evaluate.confirm import repeat_trial
from space.choices import Space
from trainers.settings import ProxySettings

TINY_SPACE = Path(__file__).with_name("tiny_space.yaml")
BUDGET = 5_696_256  # about half of the tiny space at 64 px and 10 classes

# what Tune reports for each trial the bridge hands out, in order (None: still training when the search stops)
RESULTS = [
    {"acc": 0.91, "epoch": 3, "train_seconds": 40.0},  # 0: trained to the end
    {"acc": 0.52, "epoch": 1},  # 1: stopped by ParetoASHA at its first rung
    {"acc": 0.70, "epoch": 2, "time_limited": True},  # 2: stopped by --trial-time-limit after two epochs
    {"epoch": 0, "time_limited": True},  # 3: stopped by the time limit before its first epoch ended: no accuracy
    {"error": "RuntimeError: the loss is nan"},  # 4: failed by its own fault
    None,  # 5: cut short by the time budget; its network is queued again...
    {"acc": 0.85, "epoch": 3, "train_seconds": 44.0},  # 6: ... and retrained here, as the retry of 5
    None,  # 7: cut short again; its retry waits for the next run
]


def lived_study(folder: Path, name: str = "lived") -> tuple[optuna.Study, str]:
    """The study (reloaded from storage) and its URL."""
    url = f"sqlite:///{folder}/{name}.db"
    settings = SearchSettings(study=name, budget=BUDGET, space=Space.from_yaml(TINY_SPACE), storage=url,
                              proxy=ProxySettings(epochs=3, data="synthetic"), trials=12, cost_resolution=64, cost_classes=10,
                              sampler="random", seed=3)
    study, storage = open_search_study(settings)
    bridge = BudgetedOptunaSearcher(study, storage, settings)
    with bridge:
        for i, result in enumerate(RESULTS):
            bridge.suggest(f"t{i}")
            if result is None:
                bridge.interrupt_live()
            else:
                bridge.on_trial_complete(f"t{i}", dict(result), "error" in result)
    original = next(t for t in study.trials if t.user_attrs.get("status") == "trained")
    for seed, accuracy in ((1, 0.89), (2, 0.90)):  # `confirm --seeds 3`
        attrs = outcome_attrs({"acc": accuracy, "epoch": 3}, epochs=3, proxy_epochs=3)
        study.add_trial(repeat_trial(original, seed, attrs))
    return optuna.load_study(study_name=name, storage=url), url
