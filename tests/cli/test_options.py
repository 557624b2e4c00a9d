"""The options a settings part gives the command line (console/options.py): the field's default and help, in place."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main

import cli
from nas.engine.settings import BudgetBand, CostSettings, FidelitySample, SearchSettings, TrialResources
from trainers.settings import ProxySettings, TrainSettings

COMMANDS = typer.main.get_command(cli.app).commands


def options(command: str) -> dict[str, object]:
    return {p.name: p for p in COMMANDS[command].params}


def expected_default(field: dataclasses.Field) -> object:
    """What the command line shows for a field: text for FLOPs (none when optional), `none_as` for None."""
    if field.metadata.get("flops"):
        return None
    if field.default is None and "none_as" in field.metadata:
        return field.metadata["none_as"]
    return field.default


@pytest.mark.parametrize("command, parts", [
    ("search", (BudgetBand, SearchSettings, ProxySettings, CostSettings, TrialResources)),
    ("fidelity", (FidelitySample, CostSettings, TrialResources)),
    ("confirm", (TrialResources,)),
    ("ablation", (TrialResources,)),
    ("train", (TrainSettings,)),
])
def test_every_option_of_a_part_has_its_fields_default_and_help(command, parts):
    given = options(command)
    for part in parts:
        own = vars(part)["__annotations__"]
        for field in (f for f in dataclasses.fields(part) if f.name in own and "help" in f.metadata):
            option = given[field.name]
            assert option.help == field.metadata["help"], (command, field.name)
            assert option.required == (field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING)
            if not option.required:
                assert option.default == expected_default(field), (command, field.name)


def test_a_field_without_help_is_no_option_and_a_skipped_one_is_the_commands_own():
    search, fidelity = options("search"), options("fidelity")
    assert not {"weight_decay", "threads", "results_dir", "proxy", "seed_"} & set(search)
    assert "flops_min" not in fidelity and "epochs" not in fidelity and fidelity["proxy_epochs"].default == 1
    assert fidelity["long_epochs"].default == ProxySettings().epochs  # the search's proxy, read from its settings
    assert options("train")["resume"].default is False and "weight_decay" not in options("train")


class Checked(Exception):
    """Raised where the search would start: what the command built is all this test needs."""


def test_the_parts_values_reach_the_command_as_the_settings_take_them(monkeypatch, tmp_path):
    seen = {}

    def check_search(settings):
        seen["settings"] = settings
        raise Checked

    monkeypatch.setattr("nas.engine.settings.check_search", check_search)
    with pytest.raises(Checked):
        cli.app(["search", "--budget", "4.5GFLOPs", "--flops-min", "4G", "--train-images", "0", "--no-augment", "--cost-resolution",
                 "640", "--cpus-per-trial", "0.5", "--seed", "7", "--storage", f"sqlite:///{tmp_path}/s.db"], standalone_mode=False)
    s = seen["settings"]
    assert (s.budget, s.flops_min, s.cost_resolution, s.cpus_per_trial, s.seed) == (4_500_000_000, 4_000_000_000, 640, 0.5, 7)
    assert (s.proxy.train_images, s.proxy.augment, s.proxy.seed, s.proxy.epochs) == (None, False, 7, ProxySettings().epochs)
    assert not (tmp_path / "s.db").exists()  # stopped before the study


def test_a_bad_flops_option_is_one_line_naming_it(capsys):
    assert cli.app(["search", "--budget", "1G", "--flops-min", "4.5GB"], standalone_mode=False) == 2
    assert capsys.readouterr().err.startswith("error: flops-min: cannot read '4.5GB'")
