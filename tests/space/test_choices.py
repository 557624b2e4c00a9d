import pytest
import yaml

from space.choices import SPACES_DIR, Space
from space.errors import ConvspaceError
from space.presets import PRESETS


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
    assert {c.stages[0].block for c in first} == {"basic", "bottleneck", "convmod"}


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
        assert ("groups" in trial.params) == (trial.params.get("conv") == "grouped")
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
