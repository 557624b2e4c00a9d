import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from space.config import GENOME_VERSION, ArchConfig
from space.errors import ConvspaceError
from space.presets import PRESETS
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


def test_groups_only_with_a_grouped_conv():
    with pytest.raises(ConvspaceError, match=r"stages\[0\].groups: must be 1 unless conv is grouped"):
        ArchConfig.from_dict(_with(("stages", 0, "groups"), 4))


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
    assert ArchConfig.from_dict({**data, "version": 1}) == PRESETS["resnet50"]


@pytest.mark.parametrize(
    "version, message",
    [(GENOME_VERSION + 1, f"config.version: this convspace reads genome versions 1..{GENOME_VERSION} (a newer one wrote it), got {GENOME_VERSION + 1}"),
     (0, "config.version: must be >= 1, got 0"), ("2", "config.version: must be an integer, got '2'")],
)
def test_unknown_genome_versions_are_refused(version, message):
    with pytest.raises(ConvspaceError, match=re.escape(message)):
        ArchConfig.from_dict({**tiny_config().to_dict(), "version": version})
