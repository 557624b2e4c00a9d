"""What a name on the command line means: a network (preset, exported entry, or file), and the points `sample` draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from space.errors import ConvspaceError


def load_config(name_or_file: str) -> tuple[Any, dict[str, Any]]:
    """A preset (`convnext_tiny` or `convspace_convnext_tiny`), an exported entry's name, or an ArchConfig / entry
    YAML or JSON file; with where it came from (study, trial, proxy accuracy) when it is an export."""
    from nas.export.entries import find_entry
    from space.config import ArchConfig
    from space.files import read_yaml
    from space.presets import PRESETS

    preset = name_or_file.removeprefix("convspace_")
    if preset in PRESETS:
        return PRESETS[preset], {"preset": preset}
    path = Path(name_or_file)
    data = read_yaml(path, "config") if path.is_file() else find_entry(name_or_file)
    if data is None:
        raise ConvspaceError(f"model: {name_or_file!r} is neither a preset (see `presets`), an exported entry nor a config file")
    if isinstance(data, dict) and {"name", "config"} <= set(data):  # an exported entry wraps its config
        origin = {k: data[k] for k in ("name", "study", "trial", "proxy_accuracy") if data.get(k) is not None}
        return ArchConfig.from_dict(data["config"]), origin
    return ArchConfig.from_dict(data), {}


def cost_row(name: str, cfg: Any, resolution: int) -> dict[str, Any]:
    """One network's row of a cost table: analytic params and FLOPs at `resolution`, and its config hash."""
    from space.cost import arch_cost

    cost = arch_cost(cfg, resolution)
    return {"name": name, "params": cost.params, "flops": cost.flops, "hash": cfg.hash}


def sample_rows(design: Any, n: int, seed: int, limit: int | None, resolution: int) -> tuple[list[dict[str, Any]], int]:
    """`n` seeded random points of `design` within `limit` FLOPs (a fitted space's are scaled onto a random target
    within it, as the search does), with their cost rows and configs; and how many were drawn. Gives up after 1000 draws
    per point, returning fewer."""
    import random

    from space.choices import SeededSuggester
    from space.fitting import Band, propose

    rng, rows, drawn = random.Random(seed), [], 0
    while len(rows) < n and drawn < 1000 * n:
        drawn += 1
        if limit and design.scale == "fitted":
            proposal = propose(design, SeededSuggester(rng), Band(limit, resolution=resolution))
            if proposal.refusal:
                continue
            cfg = proposal.config
        else:
            cfg = design.sample(SeededSuggester(rng))
        row = cost_row(f"#{drawn}", cfg, resolution)
        if limit is None or row["flops"] <= limit:
            rows.append({**row, "config": cfg.to_dict()})
    return rows, drawn
