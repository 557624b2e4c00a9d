"""Shared test helpers: fvcore counts, the tiny test space, tiny configs."""

from __future__ import annotations

import warnings

import pytest
import yaml

from space.choices import SPACES_DIR, Space
from space.config import ArchConfig

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


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the session (skipped only where no server binary exists)."""
    from tests.postgres import find_initdb, postgres_server

    initdb = find_initdb()
    if not initdb:
        pytest.skip("no PostgreSQL server binary (initdb) on this machine")
    with postgres_server(initdb) as url:
        yield url
