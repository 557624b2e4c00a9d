"""What the commands leave and say (issue 24, items 2, 5, 6, 7): exports that name their entry and never overwrite one
silently, pictures and reports beside the study, one-line refusals, the exact command that trains what `analyze` needs,
README commands that run as written, and reading a study without torch or Ray."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from tests.conftest import write_study

ROOT = Path(__file__).resolve().parents[2]
UNWRITABLE = Path("/proc/convspace-test")  # no file can be made under /proc, whoever runs the tests (root included)


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A working folder holding the default study (as `make demo` leaves it), for commands run in this process."""
    write_study(tmp_path, "convspace")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def one_line_error(result, starts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.output


def test_export_names_the_real_entry_refuses_to_overwrite_without_force_and_writes_nothing_half(here):
    first = invoke("export", "--best")
    assert first.exit_code == 0, first.output
    assert "use: import nas.export.zoo; timm.create_model('convspace_trial0', num_classes=..., drop_path_rate=...)" in first.output
    entry = here / "studies/exports/convspace_trial0.yaml"
    written = entry.read_text()
    again = invoke("export", "--best")  # the same trial again: nothing to replace
    assert again.exit_code == 0 and "trial 0 is already exported as convspace_trial0 (unchanged)" in again.output
    other = invoke("export", "--trial", "1", "--name", "convspace_trial0")
    one_line_error(other, f"error: name: {Path('studies/exports/convspace_trial0.yaml')} already holds an entry (study convspace, trial 0); "
                          "pass --force to replace it, or pick another --name")
    assert entry.read_text() == written
    forced = invoke("export", "--trial", "1", "--name", "convspace_trial0", "--force")
    assert forced.exit_code == 0 and "exported trial 1 as convspace_trial0, replacing the entry of that name" in forced.output
    assert "trial: 1" in entry.read_text()
    # --front (trials 1 and 0) checks every target before writing any: convspace_trial0 now holds trial 1
    front = invoke("export", "--front")
    one_line_error(front, f"error: name: {Path('studies/exports/convspace_trial0.yaml')} already holds an entry (study convspace, trial 1)")
    assert sorted(p.name for p in (here / "studies/exports").iterdir()) == ["convspace_trial0.py", "convspace_trial0.yaml"]


@pytest.mark.parametrize(("number", "says"), [
    (4, "trial: 4 has no accuracy to export: refused before training: over the budget"),
    (9, "trial: study 'convspace' has no trial 9 (trials 0..4)"),
])
def test_export_of_a_trial_without_an_accuracy_is_one_line_saying_how_it_ended(here, number, says):
    one_line_error(invoke("export", "--trial", str(number)), f"error: {says}")
    assert not (here / "studies/exports").exists()


def test_export_of_a_failed_cut_short_or_repeated_trial_points_to_the_trial_to_export(tmp_path):
    from nas.export.entries import pick_trial
    from space.errors import ConvspaceError
    from tests.nas.lived_study import lived_study

    study, _ = lived_study(tmp_path)
    said = {}
    for t in study.trials:
        try:
            pick_trial(study, t.number)
        except ConvspaceError as exc:
            said[t.number] = str(exc)
    cut = next(t for t in study.trials if str(t.user_attrs.get("fail_reason", "")).startswith("interrupted"))
    retry = next(t.number for t in study.trials if t.user_attrs.get("retry_of") == cut.number)
    assert said[cut.number].endswith(f"and retried as trial {retry}; its network is trial {retry}'s: export --trial {retry}")
    repeat = next(t for t in study.trials if t.user_attrs.get("status") == "repeat")
    assert said[repeat.number].endswith(f"; export --trial {repeat.user_attrs['repeat_of']}, the trial it repeats")
    failed = next(t for t in study.trials if t.user_attrs.get("fail_reason") == "RuntimeError: the loss is nan")
    assert said[failed.number] == f"trial: {failed.number} has no accuracy to export: failed: RuntimeError: the loss is nan"
    stopped_at_0 = next(t for t in study.trials if t.user_attrs.get("status") == "stopped" and "proxy_accuracy" not in t.user_attrs)
    assert "stopped early by the time limit before its first epoch ended (no accuracy)" in said[stopped_at_0.number]
    assert all(t.number not in said for t in study.trials if t.user_attrs.get("status") in ("trained", "stopped") and "proxy_accuracy" in t.user_attrs)


def test_export_into_a_folder_that_cannot_be_written_is_one_line(here):
    one_line_error(invoke("export", "--best", "--out", str(UNWRITABLE)), f"error: out: cannot write the entry convspace_trial0 into '{UNWRITABLE}'")


def test_pareto_plot_into_a_folder_that_cannot_be_written_is_one_line(here):
    one_line_error(invoke("pareto", "--plot", str(UNWRITABLE / "front.png")), f"error: plot: cannot write into the folder '{UNWRITABLE}'")


def test_pictures_and_reports_go_beside_the_study_by_default_and_anywhere_when_told(tmp_path):
    from nas.front.dashboard import analysis_folder, artifact_folder, front_png
    from tests.nas.test_analysis import make_study

    assert front_png("sqlite:///studies/convspace.db", "convspace") == Path("studies/convspace-front.png")
    assert analysis_folder("sqlite:///studies/convspace.db", "convspace") == Path("studies/convspace-analysis")
    assert artifact_folder("sqlite:///studies/convspace.db") == Path("studies/convspace.artifacts")
    assert front_png("postgresql+psycopg2://u:p@db/x", "big") == Path("studies/big-front.png")  # a server: studies/ all the same
    ignored = subprocess.run(["git", "check-ignore", "studies/convspace-front.png", "studies/convspace-analysis/edf.png",
                              "studies/convspace.artifacts/abc"], cwd=ROOT, capture_output=True, text=True)
    assert len(ignored.stdout.splitlines()) == 3  # none of them lands in a commit
    (tmp_path / "studies").mkdir()
    make_study("sweep", tmp_path, n=12)
    report = run(tmp_path, "analyze", "--study", "sweep")
    assert report.returncode == 0, report.stderr
    folder = tmp_path / "studies/sweep-analysis"
    assert f"written to {Path('studies/sweep-analysis')}" in report.stdout and (folder / "analysis.html").is_file()
    assert [p.name for p in (tmp_path / "studies/sweep.artifacts").iterdir()]  # the report attached for the dashboard
    elsewhere = run(tmp_path, "analyze", "--study", "sweep", "--out", "any/where")
    assert elsewhere.returncode == 0 and (tmp_path / "any/where/analysis.html").is_file()


def test_analyze_refusal_gives_the_exact_command_that_trains_what_it_needs(tmp_path, monkeypatch):
    """The command it prints, run through the command line, resumes the study (the same identity) and asks for the trials
    missing, each trained to the end."""
    import nas.engine.search
    from nas.analysis.design_space import MIN_TRIALS, load_trained
    from nas.engine.bridge import BudgetedOptunaSearcher
    from nas.engine.search import open_search_study, study_identity
    from nas.engine.settings import SearchSettings
    from nas.engine.study import trained_count
    from space.choices import Space
    from space.errors import ConvspaceError
    from trainers.settings import ProxySettings

    monkeypatch.chdir(tmp_path)
    settings = SearchSettings(study="few", budget=450_000_000, space=Space.from_yaml("convnext"), storage="sqlite:///studies/few.db",
                              proxy=ProxySettings(epochs=2, resolution=64, batch_size=16, lr=3e-3, data="synthetic", train_images=None, seed=7),
                              trials=4, cost_classes=10, flops_min=100_000_000, sampler="random", seed=7)
    study, storage = open_search_study(settings)
    bridge = BudgetedOptunaSearcher(study, storage, settings)
    with bridge:
        for i, result in enumerate(({"acc": 0.5, "epoch": 2, "train_seconds": 30.0}, {"acc": 0.4, "epoch": 1})):
            bridge.suggest(f"t{i}")
            bridge.on_trial_complete(f"t{i}", result, False)
    with pytest.raises(ConvspaceError) as refused:
        load_trained(study)
    message = str(refused.value)
    assert message.startswith(f"study: 'few' holds 1 trained trials; the analysis needs at least {MIN_TRIALS}")
    assert "(a trial trained to the end took 30 s here on average)" in message
    line = re.search(r"train 9 more to the end with: convspace (search .*?)(?: \(a trial| \(|$)", message).group(1)
    captured = {}

    def run_search(s, progress=None, checked=False):
        captured["settings"] = s
        raise SystemExit(0)

    monkeypatch.setattr(nas.engine.search, "run_search", run_search)
    CliRunner().invoke(cli.app, shlex.split(line))
    asked = captured["settings"]
    assert json.loads(json.dumps(study_identity(asked))) == study.user_attrs["identity"]  # it resumes this study, not a new one
    assert asked.trials == trained_count(study) + MIN_TRIALS - 1 and asked.scheduler == "none" and asked.study == "few"


def test_the_readme_commands_run_as_written():
    """Every command line of the README's shell blocks uses the console command the install makes (or the venv's
    Python), names a command that exists, and only options it has; pyproject installs that console command."""
    assert 'convspace = "cli:main"' in (ROOT / "pyproject.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    lines: list[str] = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("#"):  # a comment line
                continue
            if line.startswith(("[", "--")) and lines:  # a synopsis continued on the next line
                lines[-1] += " " + line
            elif line:
                lines.append(line)
    commands = {c.name or c.callback.__name__: c for c in cli.app.registered_commands}
    seen = set()
    for line in lines:
        if line.startswith(("make ", "TIMM_SCRIPTS", "export ", "ssh ", "kill ", "initdb", "pg_ctl", "psql", "ray ")):
            continue
        assert line.startswith((".venv/bin/convspace ", ".venv/bin/python ", "CONVSPACE_")), line
        if ".venv/bin/convspace " not in line:
            continue
        words = line.split(".venv/bin/convspace ", 1)[1].split()
        name = words[0]
        assert name in commands, line
        options = {o for p in __import__("typer").main.get_command(cli.app).commands[name].params for o in p.opts + p.secondary_opts}
        for word in words[1:]:
            for option in re.findall(r"(?:^|\[)(--[a-z][a-z0-9-]*)", word):
                assert option in options, f"{option} of {line}"
        seen.add(name)
    assert {"search", "pareto", "export", "dashboard", "analyze", "confirm", "inspect", "train"} <= seen
    assert "python cli.py" not in readme.replace(".venv/bin/python cli.py", "")  # one way, said once at the top


@pytest.mark.parametrize(("args", "heavy"), [
    (["pareto"], []),
    (["pareto", "--json"], []),
    (["inspect", "convnext_tiny"], []),
    (["export", "--best"], ["timm", "torch"]),  # it builds the network to check its cost (README says why)
])
def test_reading_a_study_imports_no_ray_and_torch_only_to_build_a_model(tmp_path, args, heavy):
    write_study(tmp_path, "convspace")
    code = ("import sys; sys.argv = ['cli.py'] + sys.argv[1:]; import cli\ntry:\n    cli.main()\nexcept SystemExit as e:\n"
            "    print(e.code, sorted(m for m in ('torch', 'timm', 'ray', 'matplotlib', 'optuna_dashboard') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip().splitlines()[-1] == f"0 {heavy}", result.stdout + result.stderr


def test_the_command_names_a_storage_that_is_not_the_default_and_what_no_option_says(tmp_path):
    from nas.analysis.design_space import more_trials
    from tests.nas.lived_study import lived_study

    study, url = lived_study(tmp_path)
    said = more_trials(study, 3)
    assert f" --storage {url} " in said and " --trials 9 --scheduler none" in said  # 6 count toward --trials (not those cut short) + 3
    assert "(--space: the path of the study's space file, named 'tiny')" in said  # a space file's path is not in the study
