"""The budget solver: a sampled shape scaled onto a sampled FLOPs target, the same params always the same network."""

from __future__ import annotations

import dataclasses
import random

import pytest

from space.choices import Replay, SeededSuggester, Space
from space.cost import arch_cost
from space.fitting import TARGET, Band, _Recorder, fit_shape, fitted_params, propose
from space.presets import PRESETS

BAND = Band(budget=4_500_000_000)


def shape(space: Space, seed: int) -> dict:
    """The recorded shape params of one random draw (everything but the base width)."""
    recorder = _Recorder(SeededSuggester(random.Random(seed)), {"base_width": 16})
    space.sample(recorder)
    return recorder.params


def test_the_cost_lands_at_or_just_under_the_target_at_the_largest_width_that_fits():
    space = Space.from_yaml("default")
    widths = space.dims["base_width"].candidates()
    landed = 0
    for seed in range(40):
        params = shape(space, seed)
        target = int(BAND.budget * random.Random(seed).uniform(0.25, 1.0))
        fit = fit_shape(space, params, BAND, target)
        if fit.refusal or fit.depth_scale != params["depth_scale"]:
            continue
        landed += 1
        assert fit.cost.flops <= target and fit.cost == arch_cost(fit.config, 224)
        wider = [w for w in widths if w > fit.base_width]
        if wider:  # the next width up no longer fits: this is the largest scale within the target
            cfg = space.sample(Replay({**params, "base_width": wider[0]}))
            assert arch_cost(dataclasses.replace(cfg, num_classes=1000), 224).flops > target
    assert landed >= 25


def test_depth_is_lowered_only_where_the_narrowest_network_costs_too_much():
    space = Space.from_yaml("default")
    params = {**shape(space, 1), "depth_pattern": "2,2,17,2", "depth_scale": 4.0, "block": "bottleneck", "conv": "dense",
              "dense_kernel": 3, "expansion": 1.0}
    target = 600_000_000  # the narrowest network at depth scale 4 costs 0.87 GFLOPs
    deep = fit_shape(space, params, BAND, target)
    assert deep.refusal is None and deep.depth_scale < 4.0 and deep.cost.flops <= target
    assert deep.base_width == 16  # the depth gave way only because the narrowest width did not fit
    assert fit_shape(space, {**params, "depth_scale": deep.depth_scale + 0.25}, BAND, target).depth_scale == deep.depth_scale
    roomy = fit_shape(space, params, BAND, BAND.budget)
    assert roomy.depth_scale == 4.0 and roomy.base_width > 16 and roomy.cost.flops <= BAND.budget


def test_the_same_params_give_the_same_network():
    space = Space.from_yaml("default")
    for seed in range(10):
        first = propose(space, SeededSuggester(random.Random(seed)), BAND)
        again = propose(space, SeededSuggester(random.Random(seed)), BAND)
        assert first.config == again.config and first.cost == again.cost


def test_a_shape_no_scale_brings_into_the_band_is_infeasible_with_the_cheapest_network_tried():
    space = Space.from_yaml("default")
    params = shape(space, 2)
    tiny = Band(budget=1_000_000)  # below every network of the space
    fit = fit_shape(space, params, tiny, tiny.budget)
    assert fit.refusal == "infeasible" and fit.cost.flops > tiny.budget
    assert fit.base_width == 16 and fit.depth_scale == 0.5  # the narrowest, shallowest network it tried
    floor = Band(budget=10**13, floor=10**13 - 1)  # a band no width reaches from below
    assert fit_shape(space, params, floor, floor.budget).refusal == "infeasible"


def test_random_shapes_of_the_default_space_mostly_fit_and_spread_over_the_band():
    space = Space.from_yaml("default")
    rng = random.Random(0)
    proposals = [propose(space, SeededSuggester(rng), BAND) for _ in range(200)]
    fitted = [p for p in proposals if p.refusal is None]
    assert len(fitted) >= 0.9 * len(proposals)  # measured: 95% on 1,000 shapes (docs/benchmarks.md)
    flops = sorted(p.cost.flops for p in fitted)
    assert flops[-1] <= BAND.budget and flops[-1] - flops[0] >= 0.5 * (BAND.budget - BAND.target_low * BAND.budget)


@pytest.mark.parametrize("name", ["default", "convnext"])
def test_published_networks_the_space_holds_are_given_back_by_their_params(name):
    space = Space.from_yaml(name)
    held = [n for n, cfg in PRESETS.items() if space.contains(cfg)]
    assert held and "convnext_tiny" in held
    absolute = dataclasses.replace(space, scale="absolute")
    for n in held:
        params = absolute.params_of(PRESETS[n])
        assert params is not None and absolute.sample(Replay(params)) == PRESETS[n], n
    for n in ("convnext_tiny", "resnet50", "densenet121") if name == "default" else ("convnext_tiny",):
        params = fitted_params(space, PRESETS[n], BAND)  # inside the band: the network itself comes back
        assert TARGET in params and "base_width" not in params
        assert propose(space, Replay(params), BAND).config == PRESETS[n]


def test_an_absolute_space_refuses_what_lies_outside_the_band():
    space = dataclasses.replace(Space.from_yaml("default"), scale="absolute")
    rng = random.Random(5)
    refusals = {propose(space, SeededSuggester(rng), BAND).refusal for _ in range(100)}
    assert refusals >= {None, "over_budget"}


def test_a_fitted_dense_shape_scales_its_growth_with_the_base_width():
    space = Space.from_yaml("default")
    params = fitted_params(space, PRESETS["densenet121"], BAND)
    assert params is not None and params["block"] == "dense" and params["compression"] == 0.5
    fits = [fit_shape(space, params, BAND, int(f * BAND.budget)) for f in (0.3, 0.6, 1.0)]
    assert all(f.refusal is None and f.depth_scale == 1.0 and f.cost.flops <= f.target for f in fits)
    growths = [f.config.stages[0].growth for f in fits]
    assert growths == [f.base_width // 2 for f in fits] and growths == sorted(set(growths))  # a wider budget, a faster growth
    assert [f.cost.flops for f in fits] == sorted(f.cost.flops for f in fits)
    for f in fits:  # the same DenseNet-121 shape: depths, bottleneck 4 x growth, compression, a stem of 2 x growth
        assert [s.depth for s in f.config.stages] == [6, 12, 24, 16] and f.config.stem.width == 2 * f.config.stages[0].growth
        assert [s.inner_width for s in f.config.stages] == [4 * s.growth for s in f.config.stages]
    assert fits[0].config.stages[0].growth < 32 < fits[-1].config.stages[0].growth  # DenseNet-121 (2.87 GFLOPs) lies between
