"""The README's journey with every default, as a new user takes it (issue: the first hour)."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import write_study

ROOT = Path(__file__).resolve().parents[2]


def cli(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def default_study(tmp_path_factory) -> Path:
    """A folder holding the default study, studies/convspace.db, as `make demo` leaves it."""
    root = tmp_path_factory.mktemp("first_hour")
    write_study(root, "convspace")
    return root


def test_export_best_front_and_a_stopped_trial_of_the_default_study_without_naming_it(default_study):
    best = cli(default_study, "export", "--best")
    assert best.returncode == 0, best.stderr
    assert "exported trial 0 as convspace_trial0" in best.stdout
    front = cli(default_study, "export", "--front")
    assert front.returncode == 0 and front.stdout.count("checked against the rebuilt model") == 2, front.stderr
    stopped = cli(default_study, "export", "--trial", "3")  # stopped early by ASHA: export takes it
    assert stopped.returncode == 0, stopped.stderr
    assert sorted(p.stem for p in (default_study / "studies/exports").glob("*.py")) == ["convspace_trial0", "convspace_trial1",
                                                                                        "convspace_trial3"]
    preset = cli(default_study, "export", "--best", "--name", "convspace_resnet50")
    assert preset.returncode == 2 and preset.stderr.startswith("error: name: 'convspace_resnet50' is the preset 'resnet50'")


def test_inspect_takes_an_exported_entry_name_and_says_where_it_came_from(default_study):
    assert cli(default_study, "export", "--trial", "1", "--name", "ux_trial1").returncode == 0
    report = json.loads(cli(default_study, "inspect", "ux_trial1", "--json").stdout)
    assert report["origin"] == {"name": "ux_trial1", "study": "convspace", "trial": 1}
    table = cli(default_study, "inspect", "ux_trial1")
    assert "from name ux_trial1, study convspace, trial 1" in table.stdout
    assert json.loads(cli(default_study, "inspect", "convspace_resnet50", "--json").stdout)["origin"] == {"preset": "resnet50"}


def test_pareto_defaults_to_the_search_study_and_reads_whole_at_100_columns(default_study):
    rows = json.loads(cli(default_study, "pareto", "--json").stdout)["front"]
    assert [r["trial"] for r in rows] == [1, 0]
    table = cli(default_study, "pareto", env={"COLUMNS": "100"}).stdout
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100 and "…" not in table
    architecture = " ".join(line.split("│")[-2].strip() for line in lines if line.count("│") > 5)  # folded lines rejoined
    assert "bottleneck, patchify stem, depths 2-2-2-2, widths 8-16-32-64, k7, ln/gelu" in architecture
    words = " ".join(table.split())
    assert "3 trained to the end, 1 stopped early by the scheduler, 0 failed; refused before training: 1 over the budget" in words


def test_pareto_plot_into_a_new_folder_creates_it(default_study):
    result = cli(default_study, "pareto", "--plot", "new/dir/front.png")
    assert result.returncode == 0, result.stderr
    assert (default_study / "new/dir/front.png").read_bytes()[:4] == b"\x89PNG" and "Pareto front of convspace" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "unknown"], "error: model: 'unknown' is not a registered model"),
        (["train", "--data", "cifar10", "--data-dir", "/missing", "--model", "convspace_resnet50"], "error: data: cifar10 not found"),
    ],
)
def test_train_mistakes_draw_no_progress_bar(tmp_path, args, message):
    result = cli(tmp_path, *args)
    assert result.returncode == 2 and result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.parametrize("content", [bytes(range(256)), "name: café\n".encode("latin-1")])
@pytest.mark.parametrize("command", [["sample", "--space"], ["search", "--budget", "4.5G", "--space"], ["inspect"]])
def test_a_file_that_is_not_utf8_is_one_line_naming_it(tmp_path, command, content):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    result = cli(tmp_path, *command, str(bad))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and f"{bad} is not a UTF-8 text file" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "studies").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["search", "--budget", "4.5GB"],
        ["search", "--budget", "4.5G", "--resolution", "16"],
        ["search", "--budget", "4.5G", "--data", "/no/such"],
        ["search", "--budget", "4.5G", "--address", "127.0.0.1:1"],
        ["inspect", "resnet51"],
    ],
)
def test_a_mistake_is_reported_before_torch_or_ray_is_imported(tmp_path, args):
    # Importing torch, timm and Ray takes 5-40 s: a mistake found before them is reported within about a second.
    code = ("import sys; sys.argv = ['cli.py'] + sys.argv[1:]; import cli\ntry:\n    cli.main()\nexcept SystemExit as e:\n"
            "    print(e.code, sorted(m for m in ('torch', 'timm', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "2 []", result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_the_live_view_shows_progress_rejections_and_running_trials():
    from nas.engine.events import EpochEnded, Rejected, SearchOpened, TrialEnded, TrialStarted
    from nas.front.live import SearchView
    from tests.conftest import tiny_config

    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    view = SearchView(console, study="convspace", epochs=3, live=False)
    view(SearchOpened(remaining=12, trials=12))
    for reason in ["over_budget"] * 5 + ["duplicate"]:
        view(Rejected(reason))
    view(TrialStarted(7, tiny_config(), 2_500_000_000))
    view(EpochEnded(7, epoch=2, acc=0.9123))
    panel = Console(file=io.StringIO(), width=100, record=True)
    panel.print(view)
    shown = " ".join(panel.export_text().split())  # the head wraps at 100 columns
    assert "convspace: 0 of 12 trials finished (0 trained to the end, 0 stopped early by the scheduler, 0 failed)" in shown
    assert "refused before training: 5 over the budget, 1 already evaluated" in shown
    assert "7 2.50 2/3 0.9123 bottleneck, patchify stem" in shown
    view(TrialEnded(7, "stopped", acc=0.9123, epoch=2, reason="ASHA"))
    plain = " ".join(out.getvalue().split())  # lines wrap at 100 columns
    assert "trial 7 started: bottleneck, patchify stem" in plain and "(refused before training so far: 5 over the budget, 1 already evaluated)" in plain
    assert "trial 7 stopped early by the scheduler (ASHA) after epoch 2 of 3, accuracy 0.9123 (1 of 12 finished" in plain
    panel.print(view)
    shown = " ".join(panel.export_text().split())
    assert "1 of 12 trials finished (0 trained to the end, 1 stopped early by the scheduler, 0 failed)" in shown and "left" in shown  # an ETA


def test_a_broken_zoo_entry_is_skipped_with_one_line_and_the_others_still_register(default_study, tmp_path):
    assert cli(default_study, "export", "--trial", "2", "--name", "good_net").returncode == 0
    exports = default_study / "studies/exports"
    (tmp_path / "bad_net.py").write_text((exports / "good_net.py").read_text().replace("good_net", "bad_net"))
    (tmp_path / "bad_net.yaml").write_bytes(b"name: bad_net\nconfig: {stages: oops}\n")
    code = "import timm, nas.export.zoo; print(timm.models.is_model('good_net'), timm.models.is_model('bad_net'))"
    # the default folder named again in $CONVSPACE_ZOO is read once (timm would warn that it overwrites each entry)
    zoo = os.pathsep.join([str(tmp_path), str(exports)])
    result = subprocess.run([sys.executable, "-c", code], cwd=default_study, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "CONVSPACE_ZOO": zoo})
    assert result.stdout.split() == ["True", "False"], result.stderr
    warned = [line for line in result.stderr.splitlines() if "zoo entry" in line or "Overwriting" in line]
    assert len(warned) == 1 and warned[0].startswith(f"convspace: skipped zoo entry {tmp_path / 'bad_net.yaml'} (")


def test_inspect_refuses_a_dilated_network_at_a_resolution_where_its_convs_pad_past_their_maps(tmp_path):
    import dataclasses

    from space.presets import PRESETS

    cfg = PRESETS["resnet50"]
    dilated = dataclasses.replace(cfg, stages=(*cfg.stages[:2], *(dataclasses.replace(s, dilation=4) for s in cfg.stages[2:])))
    (tmp_path / "dilated.yaml").write_text(dilated.to_yaml())
    refused = cli(tmp_path, "inspect", "dilated.yaml", "--resolution", "32")
    assert refused.returncode == 2 and refused.stderr.startswith("error: stages[2].dilation: 4 makes a 3x3 conv of stages[2] pad")
    assert cli(tmp_path, "inspect", "dilated.yaml", "--json").returncode == 0  # at 224 px it fits
