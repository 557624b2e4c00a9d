"""convspace command line: search ConvNet design spaces under a FLOPs budget.

Heavy libraries (torch, ray, optuna) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from space.errors import ConvspaceError

# timm still calls torch.jit.script at import; the deprecation notice is noise for our users.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
console = Console()


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A user mistake prints one line (no traceback) and exits with 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConvspaceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def load_config(name_or_file: str) -> Any:
    """A preset name, an exported model name, or a YAML/JSON ArchConfig file."""
    from space.config import ArchConfig
    from space.presets import PRESETS

    if name_or_file in PRESETS:
        return PRESETS[name_or_file]
    path = Path(name_or_file)
    if path.is_file():
        return ArchConfig.from_yaml(path.read_text())  # YAML is a superset of JSON
    raise ConvspaceError(f"model: {name_or_file!r} is neither a preset (see `presets`) nor a config file")


def cost_row(name: str, cfg: Any, resolution: int) -> dict[str, Any]:
    from space.cost import arch_cost

    cost = arch_cost(cfg, resolution)
    return {"name": name, "params": cost.params, "flops": cost.flops, "hash": cfg.hash}


def print_costs(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for column in ("name", "params (M)", "GFLOPs", "hash"):
        table.add_column(column, justify="left" if column in ("name", "hash") else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['params'] / 1e6:.2f}", f"{row['flops'] / 1e9:.3f}", row["hash"])
    console.print(table)


@app.command()
@user_errors
def presets(
    as_json: bool = typer.Option(False, "--json", help="One JSON list instead of a table."),
    resolution: int = typer.Option(224, help="Input side length for the FLOPs count."),
) -> None:
    """Params and GFLOPs of every published network and ConvNeXt roadmap step."""
    from space.presets import PRESETS

    rows = [cost_row(name, cfg, resolution) for name, cfg in PRESETS.items()]
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print_costs(rows, f"presets at {resolution}x{resolution} (FLOPs: fvcore multiply-adds)")


@app.command()
@user_errors
def inspect(
    model: str = typer.Argument(..., help="Preset name or ArchConfig YAML/JSON file."),
    resolution: int = typer.Option(224, help="Input side length for the FLOPs count."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verify: bool = typer.Option(False, "--verify", help="Also build the model and count with fvcore and torch."),
) -> None:
    """One network: its config, params and FLOPs (analytic; --verify checks against fvcore)."""
    cfg = load_config(model)
    report = {**cost_row(model, cfg, resolution), "resolution": resolution, "config": cfg.to_dict()}
    if verify:
        from space.network import build_network
        from space.verify import fvcore_flops

        net = build_network(cfg)
        report["params_torch"] = sum(p.numel() for p in net.parameters())
        report["flops_fvcore"] = fvcore_flops(net, resolution)
    if as_json:
        print(json.dumps(report))
        return
    console.print(cfg.to_yaml())
    print_costs([report], f"{model} at {resolution}x{resolution}")
    if verify:
        same = report["params_torch"] == report["params"] and report["flops_fvcore"] == report["flops"]
        console.print(f"fvcore {report['flops_fvcore']:,} FLOPs, torch {report['params_torch']:,} params: "
                      + ("[green]equal to the analytic count[/]" if same else "[red]DIFFERENT from the analytic count[/]"))  # fmt: skip


@app.command()
@user_errors
def sample(
    space: str = typer.Option("default", help="Space YAML file, or the name of a shipped space."),
    n: int = typer.Option(5, "-n", min=1, help="How many points."),
    seed: int = typer.Option(0, help="Same seed, same points."),
    budget: str = typer.Option(None, help="Keep only points within this budget, e.g. 4.5GFLOPs."),
    resolution: int = typer.Option(224, help="Input side length for the FLOPs count."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list with each config."),
) -> None:
    """Random points of a design space with their cost (seeded)."""
    import random

    from space.choices import SeededSuggester, Space
    from space.cost import parse_flops

    limit = parse_flops(budget) if budget else None
    design = Space.from_yaml(space)
    rng, rows, drawn = random.Random(seed), [], 0
    while len(rows) < n and drawn < 1000 * n:
        drawn += 1
        cfg = design.sample(SeededSuggester(rng))
        row = cost_row(f"#{drawn}", cfg, resolution)
        if limit is None or row["flops"] <= limit:
            rows.append({**row, "config": cfg.to_dict()})
    if len(rows) < n:
        raise ConvspaceError(f"budget: only {len(rows)} of {drawn} sampled points fit in {budget}")
    if as_json:
        print(json.dumps(rows))
    else:
        print_costs(rows, f"{design.name}: {n} points" + (f" within {budget} ({drawn} drawn)" if limit else ""))


if __name__ == "__main__":
    app()
