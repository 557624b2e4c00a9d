import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from space.config import GENOME_VERSION, ArchConfig
from space.errors import ConvspaceError
from space.presets import PRESETS, densenet
from tests.conftest import tiny_config


@pytest.mark.parametrize("name", list(PRESETS))
def test_round_trips_keep_the_config_and_its_hash(name):
    cfg = PRESETS[name]
    assert ArchConfig.from_json(cfg.to_json()) == cfg
    again = ArchConfig.from_yaml(cfg.to_yaml())
    assert again == cfg and again.hash == cfg.hash


def test_hash_differs_for_a_different_network():
    assert tiny_config().hash != tiny_config(act="relu").hash
    # roadmap_00 is resnet50 and roadmap_12 is convnext_tiny; every other preset is its own network
    assert len({c.hash for c in PRESETS.values()}) == len(PRESETS) - 2


def _with(path, value):
    data = tiny_config().to_dict()
    target = data
    *parents, leaf = path
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[leaf]
    else:
        target[leaf] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("stages", 0, "block"), "transformer", "stages[0].block: must be one of basic, bottleneck, convmod"),
        (("stages", 1, "kernel"), 4, "stages[1].kernel: must be odd"),
        (("stages", 1, "kernel"), 23, "stages[1].kernel: must be in 3..21"),
        (("stages", 2, "depth"), 0, "stages[2].depth: must be in 1..256"),
        (("stages", 0, "kernal"), 3, "stages[0].kernal: unknown field (did you mean 'kernel'?)"),
        (("stages", 0, "attention"), KeyError, "stages[0].attention: missing field"),
        (("stem", "type"), "vit", "stem.type: must be one of patchify, resnet, conv2former, deep"),
        (("norm",), "rms", "norm: must be one of bn, ln, gn"),
        (("act",), "tanh", "act: must be one of relu, gelu, silu"),
        (("conv_bias",), "yes", "conv_bias: must be true or false"),
        (("num_classes",), KeyError, "config.num_classes: missing field"),
        (("widht",), 3, "config.widht: unknown field"),
    ],
)
def test_bad_configs_name_the_field_and_the_allowed_values(path, value, message):
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict(_with(path, value))


def test_groups_must_divide_the_channels_of_the_grouped_conv():
    data = _with(("stages", 1, "conv"), "grouped")
    data["stages"][1]["groups"] = 3
    data["dw_position"] = "middle"
    with pytest.raises(ConvspaceError, match=r"stages\[1\].groups: must divide the 64 channels"):
        ArchConfig.from_dict(data)


def test_groups_only_with_a_conv_that_takes_them():
    message = "stages[0].groups: must be 1 unless conv takes groups (grouped, shuffle, separable, splat, deformable); conv is depthwise, got 4"
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict(_with(("stages", 0, "groups"), 4))


def _stage(index: int, arch: dict | None = None, **stage) -> dict:
    """tiny_config's dict with some fields of one stage (and of the network) changed."""
    data = {**tiny_config().to_dict(), **(arch or {})}
    data["stages"][index].update(stage)
    return data


STRIDED = dict(downsample="strided")
MIDDLE = dict(dw_position="middle")


@pytest.mark.parametrize(
    "data, message",
    [
        (_stage(1, conv="deformable", kernel=7, groups=1), "stages[1].kernel: must be 3 for a deformable conv (its offsets are learnt for a 3x3 grid), got 7"),
        (_stage(0, radix=4), "stages[0].radix: must stay 2 (its default) unless conv is splat; conv is depthwise, got 4"),
        (_stage(0, conv="splat", radix=5), "stages[0].radix: must be in 1..4, got 5"),
        (_stage(0, conv="shuffle", groups=1), "stages[0].groups: must be >= 2 for a shuffle conv, got 1"),
        (_stage(1, STRIDED, dilation=3), "stages[1].dilation: must be one of 1, 2, 4, got 3"),
        (_stage(1, STRIDED, dilation=True), "stages[1].dilation: must be an integer, got True"),
        (_stage(0, STRIDED, dilation=2), "stages[0].dilation: must be 1 (the first stage has no stride to replace: the stem reduces 4x), got 2"),
        (_stage(2, dilation=2), "stages[2].dilation: must be 1 when downsample is separate (its 2x2/s2 layer is a patch merge, not a stride to dilate"),
        (_stage(0, conv="splat", radix=3), "stages[0].radix: must divide the 8 channels of the splat conv (width 8, expansion 4.0), got 3"),
        (_stage(0, conv="splat", groups=8, radix=2),
         "stages[0].groups: times radix 2 must divide the 8 channels of the splat conv (width 8, expansion 4.0), got 8"),
        (_stage(3, MIDDLE, conv="splat", groups=3, radix=1, expansion=0.75),
         "stages[3].groups: must divide the 32 channels of the split attention's MLP (the 48 channels of the splat conv (width 64, expansion 0.75)), got 3"),
        # every conv of a shuffle bottleneck is grouped: the first 1x1 conv sees the stem's 8 channels
        (_stage(0, MIDDLE, conv="shuffle", groups=16, expansion=2.0),
         "stages[0].groups: must divide the 8 channels of the shuffle conv (width 8, expansion 2.0), got 16"),
        (_stage(1, MIDDLE, conv="separable", groups=3), "stages[1].groups: must divide the 64 channels of the separable conv (width 16, expansion 4.0), got 3"),
        (_stage(1, MIDDLE, conv="deformable", groups=3, kernel=3), "stages[1].groups: must divide the 64 channels of the deformable conv"),
    ],
)
def test_new_conv_and_dilation_combinations_that_cannot_hold_are_refused_naming_the_field(data, message):
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict(data)


def test_a_version_1_config_gets_the_new_fields_at_their_defaults_and_may_not_name_them():
    old = json.loads((DATA / "config_v1.json").read_text())
    assert {(s.dilation, s.radix) for s in ArchConfig.from_dict(old).stages} == {(1, 2)}
    old["stages"][0]["dilation"] = 1
    message = f"stages[0].dilation: not a field of genome version 1 (added in version 2); write version: {GENOME_VERSION} with every field of it"
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict(old)


def test_a_current_config_must_give_the_new_fields():
    data = tiny_config().to_dict()
    del data["stages"][0]["dilation"]
    with pytest.raises(ConvspaceError, match=re.escape("stages[0].dilation: missing field (required: dilation)")):
        ArchConfig.from_dict(data)


def test_new_fields_change_the_hash_only_away_from_their_defaults():
    resnet = PRESETS["resnet50"]
    dilated = dataclasses.replace(resnet, stages=resnet.stages[:3] + (dataclasses.replace(resnet.stages[3], dilation=2),))
    assert dilated.hash != resnet.hash and ArchConfig.from_json(dilated.to_json()).hash == dilated.hash
    assert PRESETS["resnest50d"].hash != dataclasses.replace(PRESETS["resnest50d"], stages=tuple(
        dataclasses.replace(s, radix=1) for s in PRESETS["resnest50d"].stages)).hash


def test_yaml_syntax_error_is_a_user_error():
    with pytest.raises(ConvspaceError, match="config: not valid YAML"):
        ArchConfig.from_yaml("stem: [")


def test_config_modules_do_not_import_torch():
    code = "import space.config, space.choices, space.cost, space.presets, space.layout, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_json_is_canonical():
    assert json.loads(tiny_config().to_json())["stages"][0]["width"] == 8


DATA = Path(__file__).parent / "data"


def test_a_config_written_before_versions_loads_with_its_hash():
    # config_v1.json and presets_v1.json are to_dict() of the presets as written at commit 9ec2920, before the
    # genome had a version: stored studies and exports hold exactly this form, and deduplicate on its hash.
    cfg = ArchConfig.from_json((DATA / "config_v1.json").read_text())
    assert cfg == PRESETS["resnext50_32x4d"] and cfg.hash == "634482d37d6212ab"
    stored = json.loads((DATA / "presets_v1.json").read_text())
    assert set(stored) <= set(PRESETS)
    for name, entry in stored.items():
        loaded = ArchConfig.from_dict(entry["config"])
        assert loaded == PRESETS[name] and loaded.hash == entry["hash"] == PRESETS[name].hash, name


def test_configs_are_written_with_the_genome_version():
    data = PRESETS["resnet50"].to_dict()
    assert next(iter(data)) == "version" and data["version"] == GENOME_VERSION
    assert json.loads(PRESETS["resnet50"].to_json())["version"] == GENOME_VERSION


@pytest.mark.parametrize(
    "version, message",
    [(GENOME_VERSION + 1, f"config.version: this convspace reads genome versions 1..{GENOME_VERSION} (a newer one wrote it), got {GENOME_VERSION + 1}"),
     (0, "config.version: must be >= 1, got 0"), ("2", "config.version: must be an integer, got '2'")],
)
def test_unknown_genome_versions_are_refused(version, message):
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict({**tiny_config().to_dict(), "version": version})


def _dense(index: int, **stage) -> dict:
    """DenseNet-121's dict with some fields of one stage changed."""
    data = PRESETS["densenet121"].to_dict()
    data["stages"][index].update(stage)
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (_dense(1, width=500), "stages[1].width: must be 512 for this dense stage (its 128 input channels (after a transition of "
                               "compression 0.5) + 12 layers x growth 32), got 500"),
        (_dense(0, depth=5), "stages[0].width: must be 224 for this dense stage (its 64 input channels + 5 layers x growth 32), got 256"),
        # a compression changes what enters the stage, so the width the stage must say
        (_dense(2, compression=1.0), "stages[2].width: must be 1280 for this dense stage (its 512 input channels (after a transition "
                                     "of compression 1.0) + 24 layers x growth 32), got 1024"),
        (_dense(0, compression=1.0), "stages[0].compression: must stay 0.5 (the first stage has no transition to compress), got 1.0"),
        (_dense(0, attention="se"), "stages[0].attention: must be none for dense blocks"),
        (_dense(0, conv="grouped", groups=2), "stages[0].conv: must be dense for dense blocks (use a bottleneck for the other convs), got 'grouped'"),
        (_dense(1, dilation=2), "stages[1].dilation: must be 1 for dense blocks"),
        (_dense(1, compression=0), "stages[1].compression: must be in [0.0625, 1.0], got 0"),
        (_dense(1, growth=0), "stages[1].growth: must be in 1..1024, got 0"),
        (_stage(0, growth=16), "stages[0].growth: must stay 32 (its default) unless block is dense; block is bottleneck, got 16"),
        (_stage(1, compression=1.0), "stages[1].compression: must stay 0.5 (its default) unless block is dense; block is bottleneck, got 1.0"),
    ],
)
def test_dense_stages_that_cannot_hold_are_refused_naming_the_field(data, message):
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict(data)


def test_a_version_2_config_loads_with_its_hash_and_may_not_name_the_dense_fields():
    # config_v2.json is resnest50d's to_dict() and hash as genome version 2 wrote them (commit 4b93a97), before dense blocks
    stored = json.loads((DATA / "config_v2.json").read_text())
    cfg = ArchConfig.from_dict(stored["config"])
    assert stored["config"]["version"] == 2 and cfg == PRESETS["resnest50d"] and cfg.hash == stored["hash"] == PRESETS["resnest50d"].hash
    assert {(s.growth, s.compression) for s in cfg.stages} == {(32, 0.5)}
    stored["config"]["stages"][0]["growth"] = 32
    message = f"stages[0].growth: not a field of genome version 2 (added in version 3); write version: {GENOME_VERSION} with every field of it"
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict(stored["config"])
    dense = PRESETS["densenet121"]
    assert ArchConfig.from_json(dense.to_json()) == dense and dense.hash != densenet((6, 12, 24, 16), compression=1.0).hash
