"""Shared test helpers: fvcore counts, the tiny test space, tiny configs."""

from __future__ import annotations

import os
import warnings

import pytest
import yaml

from space.choices import Space
from space.config import ArchConfig
from space.space_file import SPACES_DIR

warnings.filterwarnings("ignore")


def fvcore_count(model, resolution: int, in_chans: int = 3) -> tuple[int, int]:
    """(params, fvcore FLOPs) of a built model."""
    from space.verify import fvcore_flops

    return sum(p.numel() for p in model.parameters()), fvcore_flops(model, resolution, in_chans)


def small_default_space() -> Space:
    """The default space with every choice kept but small widths and depths, so points build in milliseconds."""
    data = yaml.safe_load((SPACES_DIR / "default.yaml").read_text())
    dims = data["dimensions"]
    dims["base_width"] = {"int": [8, 32], "step": 8}
    dims["depth_scale"] = {"value": 1.0}
    dims["depth_pattern"] = {"choice": [[1, 1, 1, 1], [1, 1, 2, 1]]}
    dims["head_width"] = {"choice": [0, 64]}
    dims["groups"] = {"choice": [2, 4, 8]}
    dims["num_classes"] = {"value": 10}
    return Space.from_dict(data)


def tiny_config(**changes) -> ArchConfig:
    """A 4-stage ConvNeXt-like net with 8..64 channels and one block per stage."""
    from space.presets import _change, convnext

    return _change(convnext((1, 1, 1, 1), (8, 16, 32, 64)), **{"num_classes": 10, **changes})


def write_study(root, name: str, extra_over_budget: int = 0):
    """A small real study in root/studies/<name>.db written through Optuna as the search writes it (no training):
    trials 0-2 trained (0 and 1 on the front), 3 stopped early, 4 over budget, then `extra_over_budget` more."""
    import dataclasses

    import optuna
    from optuna.trial import TrialState

    from space.cost import arch_cost

    (root / "studies").mkdir(exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{root}/studies/{name}.db", directions=["maximize", "minimize"])
    study.set_user_attr("budget", 60_000_000)
    study.set_user_attr("identity", {"cost_resolution": 224})
    rows = [("trained", 0.9, 2, "gelu", 1), ("trained", 0.8, 1, "relu", 1), ("trained", 0.7, 3, "silu", 1),
            ("stopped", 0.5, 1, "gelu", 1), ("over_budget", None, 1, "relu", 64)]
    rows += [("over_budget", None, 1, "relu", 64)] * extra_over_budget  # 64x wider: thousands of times the budget
    for status, acc, depth, act, scale in rows:
        base = tiny_config(act=act, num_classes=1000)
        cfg = dataclasses.replace(base, stages=tuple(dataclasses.replace(s, depth=depth, width=s.width * scale) for s in base.stages))
        cost = arch_cost(cfg)
        trial = study.ask()
        for key, value in {"config": cfg.to_json(), "hash": cfg.hash, "flops": cost.flops, "params": cost.params,
                           "status": status, "epochs": 2 if status == "trained" else 1}.items():
            trial.set_user_attr(key, value)
        if status == "trained":
            study.tell(trial, [acc, cost.flops])
        else:
            if status == "stopped":
                trial.set_user_attr("proxy_accuracy", acc)  # its accuracy at its last epoch, as the search keeps it
            study.tell(trial, state=TrialState.PRUNED)
    return study


@pytest.fixture(autouse=True)
def no_inherited_terminal_size():
    """Something in the test process sets COLUMNS=80 and LINES=24 in the C environment (not os.environ); a CLI run
    as a subprocess would take them as the user's terminal and fold its lines at 80 columns."""
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
        os.unsetenv(name)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the session (skipped only where no server binary exists)."""
    from tests.postgres import find_initdb, postgres_server

    initdb = find_initdb()
    if not initdb:
        pytest.skip("no PostgreSQL server binary (initdb) on this machine")
    with postgres_server(initdb) as url:
        yield url
