import re

import pytest
import yaml

from space.choices import Space
from space.errors import ConvspaceError
from space.presets import PRESETS
from space.space_file import SPACES_DIR


def default_dict():
    return yaml.safe_load((SPACES_DIR / "default.yaml").read_text())


def test_default_space_contains_every_preset_and_roadmap_step():
    space = Space.from_yaml("default")
    assert [n for n, c in PRESETS.items() if not space.contains(c)] == []


def test_convnext_space_contains_convnext_tiny_but_not_resnet50():
    space = Space.from_yaml("convnext")
    assert space.contains(PRESETS["convnext_tiny"]) and not space.contains(PRESETS["resnet50"])


def test_samples_are_seeded_valid_and_contained():
    space = Space.from_yaml("default")
    first, again = space.sample_random(50, seed=4), space.sample_random(50, seed=4)
    assert first == again and first != space.sample_random(50, seed=5)
    assert all(space.contains(c) for c in first)
    assert {c.stages[0].block for c in first} == {"basic", "bottleneck", "convmod", "dense"}


def test_optuna_trial_parameters_are_stable_and_conditional():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = Space.from_yaml("convnext")
    for _ in range(20):
        trial = study.ask()
        cfg = space.sample(trial)
        assert space.contains(cfg)
        assert {f"kernel_s{i}" for i in range(4)} <= set(trial.params)
        assert "norm" not in trial.params  # fixed values are not parameters
        study.tell(trial, 0.0)
    default = Space.from_yaml("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        cfg = default.sample(trial)
        assert ("conv" in trial.params) == (cfg.stages[0].block == "bottleneck")
        assert ("groups" in trial.params) == (trial.params.get("conv") in ("grouped", "shuffle", "separable", "splat", "deformable"))
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["dimensions"].update(kernal={"choice": [3]}), "dimensions.kernal: unknown dimension (did you mean 'kernel'?)"),
        (lambda d: d["dimensions"].pop("act"), "dimensions.act: missing"),
        (lambda d: d["dimensions"].update(kernel={"int": [4, 8], "step": 2}), "kernel: must be odd"),
        (lambda d: d["dimensions"].update(block={"choice": ["mlp"]}), "block: must be one of basic, bottleneck, convmod"),
        (lambda d: d["dimensions"].update(act={"choice": []}), "act.choice: must be a non-empty list"),
        (lambda d: d["dimensions"].update(act={"choice": ["relu"], "int": [1, 2]}), "act: give exactly one of"),
        (lambda d: d["dimensions"].update(act={"choice": ["relu"], "per_stage": True}), "act.per_stage: only stage dimensions"),
        (lambda d: d["dimensions"].update(depth_scale={"float": [0.5, 2.0]}), "depth_scale: needs a step"),
        (lambda d: d["dimensions"].update(base_width={"int": [64, 32]}), "base_width.int: low must not exceed high"),
        (lambda d: d["dimensions"].update(depth_pattern={"choice": [[1, 1, 1]]}), "dimensions.depth_pattern: every depth pattern"),
        (lambda d: d.update(dimensionz={}), "space.dimensionz: unknown key"),
        # groups 0 loaded before and gave depthwise convs under another name (gcd(0, c) = c)
        (lambda d: d["dimensions"].update(groups={"choice": [2, 0]}), "dimensions.groups: must be >= 1, got 0"),
        # one bad value among 65: 32 random points at load rarely met it
        (lambda d: d["dimensions"].update(expansion={"float": [0.25, 16.25], "step": 0.25}), "dimensions.expansion: must be in [0.0625, 16], got 16.25"),
        (lambda d: d["dimensions"].update(drop_path_rate={"float": [0.0, 1.0]}), "dimensions.drop_path_rate: must be in [0.0, 0.99], got 1.0"),
        (lambda d: d["dimensions"].update(head_width={"int": [-1, 4096]}), "dimensions.head_width: must be >= 0, got -1"),
        (lambda d: d["dimensions"].update(conv_bias={"choice": [False, "yes"]}), "dimensions.conv_bias: must be true or false, got 'yes'"),
        (lambda d: d["dimensions"].update(stem={"choice": ["resnet", "vit"]}), "dimensions.stem: must be one of patchify"),
        (lambda d: d["dimensions"].update(base_width={"choice": [64, -8]}), "dimensions.base_width: must hold numbers above 0, got -8"),
        (lambda d: d["dimensions"].update(depth_scale={"choice": [1.0, 100.0]}),
         "dimensions.depth_pattern: [3, 4, 6, 3] x depth_scale 100.0 gives a depth that: must be in 1..256, got 300"),
        (lambda d: d["dimensions"].update(depth_pattern={"choice": [[1] * 7]}, width_multipliers={"choice": [[1] * 7]}),
         "dimensions.depth_pattern: must give 1..6 stages, got 7"),
    ],
)
def test_bad_spaces_are_refused_with_the_dimension_named(change, message):
    data = default_dict()
    change(data)
    with pytest.raises(ConvspaceError) as info:
        Space.from_dict(data)
    assert message in str(info.value)


def test_missing_space_file_lists_the_shipped_ones():
    with pytest.raises(ConvspaceError, match="shipped spaces: convnext, default"):
        Space.from_yaml("nowhere.yaml")


def test_new_dimension_values_are_checked_at_load():
    for dims, message in [({"radix": {"choice": [2, 0]}}, "dimensions.radix: must be in 1..4, got 0"),
                          ({"dilation": {"choice": [1, 3], "per_stage": True}}, "dimensions.dilation: must be one of 1, 2, 4, got 3"),
                          ({"conv": {"choice": ["dense", "octave"]}}, "dimensions.conv: must be one of dense, grouped, depthwise, shuffle")]:
        data = default_dict()
        data["dimensions"].update(dims)
        with pytest.raises(ConvspaceError, match=re.escape(message)):
            Space.from_dict(data)


def test_a_space_written_before_dilation_and_radix_keeps_its_dimensions_and_networks():
    data = default_dict()
    del data["dimensions"]["dilation"], data["dimensions"]["radix"]
    data["dimensions"]["conv"] = {"choice": ["dense", "grouped", "depthwise"]}
    space = Space.from_dict(data)
    assert "dilation" not in space.dims and "radix" not in space.dims  # a study's recorded dimensions stay as they were
    assert {(s.dilation, s.radix) for c in space.sample_random(100, seed=2) for s in c.stages} == {(1, 2)}


def dilated_default() -> Space:
    """The default space with dilation per stage (the default leaves dilation out: see its comment)."""
    data = default_dict()
    data["dimensions"]["dilation"] = {"choice": [1, 2, 4], "per_stage": True}
    return Space.from_dict(data)


def test_samples_of_the_new_choices_follow_the_genome_and_cover_every_value():
    space = dilated_default()
    samples = space.sample_random(1500, seed=0)
    stages = [(i, s, c) for c in samples for i, s in enumerate(c.stages)]
    assert all(space.contains(c) for c in samples)
    assert {s.conv for _, s, _ in stages} == {"dense", "grouped", "depthwise", "shuffle", "separable", "splat", "deformable"}
    assert {s.radix for _, s, _ in stages if s.conv == "splat"} == {1, 2, 4}
    assert {s.dilation for _, s, _ in stages} == {1, 2, 4}
    assert all(s.kernel == 3 for _, s, _ in stages if s.conv == "deformable")
    # large kernels are depthwise only (ConvNeXt's, ConvMod's); the dense-cost convs take 3 or 5
    assert {s.kernel for _, s, _ in stages if s.conv == "depthwise"} == set(range(3, 22, 2))
    assert {s.kernel for _, s, _ in stages if s.conv not in ("depthwise", "deformable")} == {3, 5}
    assert all(s.dilation == 1 for i, s, c in stages if i == 0 or c.downsample == "separate")
    assert all(s.radix == 2 for _, s, _ in stages if s.conv != "splat")
    assert {s.groups for _, s, _ in stages if s.conv in ("separable", "splat", "deformable")} >= {1, 2, 4, 8}


def test_optuna_parameters_of_the_new_dimensions_are_conditional():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    space = dilated_default()
    seen = set()
    for _ in range(120):
        trial = study.ask()
        cfg = space.sample(trial)
        convs = {s.conv for s in cfg.stages}
        assert ("radix" in trial.params) == (trial.params.get("conv") == "splat")
        dense_cost = trial.params.get("block") in ("basic", "dense") or trial.params.get("conv") not in ("depthwise", "deformable", None)
        assert ("kernel" in trial.params) == (not dense_cost and trial.params.get("conv") != "deformable")
        assert ("dense_kernel" in trial.params) == dense_cost
        assert "dilation_s0" not in trial.params
        dense = trial.params["block"] == "dense"
        assert ({f"dilation_s{i}" for i in (1, 2, 3)} <= set(trial.params)) == (cfg.downsample == "strided" and not dense)
        # a dense stage asks its own dimensions (compression: there is a transition after stage 0) and none that do not apply
        assert ("compression" in trial.params) == dense and (dense <= ({"conv", "attention"}.isdisjoint(trial.params)))
        seen |= convs
        study.tell(trial, 0.0)
    assert {"shuffle", "separable", "splat", "deformable"} <= seen


def test_contains_refuses_what_the_space_cannot_sample():
    import dataclasses

    space, resnest = dilated_default(), PRESETS["resnest50d"]
    assert space.contains(resnest)
    shared_dilation = dict(space.dims, dilation=dataclasses.replace(space.dims["dilation"], per_stage=False))
    dilated = dataclasses.replace(resnest, stages=resnest.stages[:2] + tuple(dataclasses.replace(s, dilation=2) for s in resnest.stages[2:]))
    assert space.contains(dilated) and not dataclasses.replace(space, dims=shared_dilation).contains(dilated)  # (1, 1, 2, 2): per stage only
    no_radix_1 = dataclasses.replace(space, dims=dict(space.dims, radix=dataclasses.replace(space.dims["radix"], values=(2, 4))))
    one_split = dataclasses.replace(resnest, stages=tuple(dataclasses.replace(s, radix=1) for s in resnest.stages))
    assert space.contains(one_split) and not no_radix_1.contains(one_split)
