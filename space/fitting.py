"""The budget solver: a sampled network *shape* scaled so that its analytic FLOPs land on a sampled target.

Why: on the default space only ~8% of random points cost <= 4.5 GFLOPs. A search that samples absolute widths
spends most proposals outside the budget, and replacing them (by random in-band draws, as we did) takes the choice
away from the sampler. In a `scale: fitted` space the sampler proposes everything but the scale (block, conv,
kernel, depth pattern and depth scale, stem, norms, expansion, ...) plus a FLOPs target, a fraction of the budget
(`flops_target`); the solver then takes the largest base width whose cost is <= the target (EfficientNet and
RegNet scale a shape to a FLOPs regime the same way), lowering the depth scale below the sampled one only where the
smallest width still costs too much. The same params always give the same network, so the sampler learns from
exactly what it proposed. A shape that no scale brings into the band is *infeasible*: the search tells the sampler
so (an Optuna constraint on a stored trial) and asks again; it is never swapped for another point.

Pure Python on the analytic cost (~0.2 ms a point): a solve costs a few milliseconds, no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from space.choices import Replay, Space, Suggester
from space.config import ArchConfig
from space.cost import PAPER_CLASSES, PAPER_RESOLUTION, Cost, arch_cost, check_fits
from space.errors import ConvspaceError

TARGET = "flops_target"  # the sampled parameter: the FLOPs target as a fraction of the budget
DEFAULT_TARGET_FLOOR = 0.25  # without --flops-min the targets span [budget / 4, budget] (documented in the README)
SCALED = ("base_width", "depth_scale")  # the dimensions the solver sets (depth_scale: only ever lowered)


@dataclass(frozen=True)
class Band:
    """Where a search wants its networks: FLOPs in [floor, budget], counted at `resolution` px and `classes` classes."""

    budget: int
    floor: int = 0  # --flops-min (0: no floor; the targets still start at DEFAULT_TARGET_FLOOR of the budget)
    resolution: int = PAPER_RESOLUTION
    classes: int = PAPER_CLASSES
    proxy_resolution: int | None = None  # where set, a dilated conv padding past its map there is refused (`unfit`)

    @property
    def target_low(self) -> float:
        """The lowest target, as a fraction of the budget."""
        return self.floor / self.budget if self.floor else DEFAULT_TARGET_FLOOR


@dataclass(frozen=True)
class Proposal:
    """One sampled point, fitted (or not) to the band: the network, its cost, and why it is refused (None: it trains)."""

    config: ArchConfig
    cost: Cost
    refusal: str | None = None  # over_budget, under_band, infeasible, unfit (the nas.engine.record statuses)
    base_width: int | None = None  # where the solver chose them
    depth_scale: float | None = None
    target: int | None = None  # the FLOPs target (fitted spaces)

    def attrs(self) -> dict[str, Any]:
        """What a trial records of the fitting (nothing for an absolute space)."""
        if self.target is None:
            return {}
        return {"fitted_base_width": self.base_width, "fitted_depth_scale": self.depth_scale, "flops_target_flops": self.target}


class _Recorder:
    """Passes a space's questions on to a trial (or any Suggester) and keeps the answers; the scaled dimensions are
    not asked (the solver sets them), except the depth scale, which the sampler proposes as an upper bound."""

    def __init__(self, trial: Suggester, placeholder: dict[str, Any]) -> None:
        self.trial, self.placeholder, self.params = trial, placeholder, {}

    def _keep(self, name: str, ask: Any) -> Any:
        self.params[name] = value = self.placeholder[name] if name in self.placeholder else ask()
        return value

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._keep(name, lambda: self.trial.suggest_categorical(name, choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._keep(name, lambda: self.trial.suggest_int(name, low, high, step=step, log=log))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        return self._keep(name, lambda: self.trial.suggest_float(name, low, high, step=step, log=log))


def _priced(space: Space, params: dict[str, Any], band: Band, base_width: Any, depth_scale: Any) -> tuple[ArchConfig, Cost]:
    cfg = space.sample(Replay({**params, "base_width": base_width, "depth_scale": depth_scale}))
    cfg = dataclasses.replace(cfg, num_classes=band.classes)
    return cfg, arch_cost(cfg, band.resolution)


def _scale_values(space: Space, name: str) -> list[Any]:
    """The values a scaled dimension can take, in the form its sampler answers (ascending)."""
    dim = space.dims[name]
    if dim.kind == "value":
        return [dim.values[0]]
    if dim.kind == "choice":
        return sorted(dim.values)
    if dim.kind == "float" and not dim.step:
        raise ConvspaceError(f"dimensions.{name}: a fitted space needs a finite {name} (a choice, or a range with a step)")
    return sorted(dim.candidates())


def fit_shape(space: Space, params: dict[str, Any], band: Band, target: int) -> Proposal:
    """The network of recorded shape `params` scaled onto `target` FLOPs (see the module docstring).

    The largest base width whose cost is <= target, at the sampled depth scale; where the smallest width costs more,
    the next lower depth scale, and so on. Where nothing lands in [floor, target], the in-band point nearest the
    target (the cheapest one above it, or the next width above a point under the floor); where nothing lands in the
    band at all, an `infeasible` proposal carrying the cheapest (or costliest) network tried."""
    widths = _scale_values(space, "base_width")
    sampled_depth = params.get("depth_scale", _scale_values(space, "depth_scale")[-1])
    depths = [d for d in _scale_values(space, "depth_scale") if d <= sampled_depth][::-1] or [sampled_depth]
    cache: dict[tuple[Any, Any], tuple[ArchConfig, Cost]] = {}

    def priced(w: Any, d: Any) -> tuple[ArchConfig, Cost]:
        if (w, d) not in cache:
            cache[(w, d)] = _priced(space, params, band, w, d)
        return cache[(w, d)]

    def proposal(w: Any, d: Any, refusal: str | None = None) -> Proposal:
        cfg, cost = priced(w, d)
        return Proposal(cfg, cost, refusal, base_width=w, depth_scale=d, target=target)

    for d in depths:
        if priced(widths[0], d)[1].flops > target:
            continue  # even the narrowest network is too costly at this depth: lower it
        # The cost grows with the width almost everywhere (a cardinality fitted to the channels can make it dip), so
        # bisect to the last width within the target, then step on while the next one still fits.
        lo, hi = 0, len(widths) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if priced(widths[mid], d)[1].flops <= target:
                lo = mid
            else:
                hi = mid - 1
        if priced(widths[lo], d)[1].flops >= band.floor:
            return proposal(widths[lo], d)
        if lo + 1 < len(widths) and band.floor <= priced(widths[lo + 1], d)[1].flops <= band.budget:
            return proposal(widths[lo + 1], d)  # the width steps over [floor, target]: the one just above it
        if lo == len(widths) - 1:
            return proposal(widths[lo], d, "infeasible")  # the widest network is still under the floor
        return proposal(widths[lo + 1], d, "infeasible")  # nothing between the floor and the budget at this depth
    cheapest = proposal(widths[0], depths[-1])  # nothing within the target: the narrowest, shallowest network
    return cheapest if cheapest.cost.flops <= band.budget else dataclasses.replace(cheapest, refusal="infeasible")


def propose(space: Space, trial: Suggester, band: Band) -> Proposal:
    """One point of `space` from a trial (an Optuna trial or a seeded draw), refused or fitted to `band`.

    A fitted space: the trial proposes the shape and `flops_target`, the solver sets the scale. An absolute space:
    the trial proposes every dimension and a point outside the band is refused (`over_budget`, `under_band`)."""
    if space.scale == "fitted":
        fraction = trial.suggest_float(TARGET, band.target_low, 1.0)
        recorder = _Recorder(trial, {"base_width": _scale_values(space, "base_width")[0]})
        space.sample(recorder)
        result = fit_shape(space, recorder.params, band, int(fraction * band.budget))
    else:
        cfg = dataclasses.replace(space.sample(trial), num_classes=band.classes)
        cost = arch_cost(cfg, band.resolution)
        refusal = "over_budget" if cost.flops > band.budget else "under_band" if cost.flops < band.floor else None
        result = Proposal(cfg, cost, refusal)
    if result.refusal is None and band.proxy_resolution:
        try:
            check_fits(result.config, band.proxy_resolution)
        except ConvspaceError:
            return dataclasses.replace(result, refusal="unfit")
    return result


def fitted_params(space: Space, cfg: ArchConfig, band: Band) -> dict[str, Any] | None:
    """The trial params under which `propose` gives `cfg` scaled into `band` (a published network's shape, for the
    warm start), or None when the space cannot hold its shape. The target is the network's own cost where it lies in
    the band, else the budget (a larger network is scaled down to it) or the floor of the targets (a smaller one up)."""
    params = space.params_of(cfg)
    if params is None:
        return None
    if space.scale != "fitted":
        return params
    flops = arch_cost(dataclasses.replace(cfg, num_classes=band.classes), band.resolution).flops
    fraction = min(1.0, max(band.target_low, flops / band.budget))
    # The target as the trial will read it back (a float fraction of the budget); a hair above the network's own cost,
    # so that rounding in the fraction cannot drop it to the next lower width.
    fraction = min(1.0, math.nextafter(fraction, math.inf) if fraction < 1.0 else fraction)
    return {**{k: v for k, v in params.items() if k != "base_width"}, TARGET: fraction}
