"""One vocabulary for how trials ended (issue 24, item 3) and the dashboard showing what `pareto` shows (item 4): the
live panel, `pareto` (table and JSON), the dashboard's view, notes and artifacts, on a study written through the bridge."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from nas.engine.endings import ENDINGS, REFUSALS, endings, how_it_ended, study_words
from nas.engine.record import StudyRecord
from tests.nas.lived_study import lived_study

warnings.filterwarnings("ignore")


@pytest.fixture(scope="module")
def lived(tmp_path_factory) -> tuple[optuna.Study, str, Path]:
    folder = tmp_path_factory.mktemp("lived")
    study, url = lived_study(folder)
    return study, url, folder


def sentences(study: optuna.Study) -> dict[int, str]:
    found = endings(study.trials, StudyRecord(study))
    return {t.number: how_it_ended(t, found) for t in study.trials}


def test_the_one_table_names_every_ending_and_refusal_with_words_and_a_colour():
    from nas.engine.record import NEVER_TRAINED

    assert set(REFUSALS) == set(NEVER_TRAINED)  # every reason a sample is refused has its words
    assert all(e.words and e.colour.startswith("#") and len(e.colour) == 7 for e in ENDINGS.values())
    assert len({e.colour for e in ENDINGS.values()}) == len(ENDINGS)  # told apart in a plot


def test_each_trial_says_how_it_ended_and_which_trial_it_belongs_to(lived):
    study, _, _ = lived
    said = sentences(study)
    by_status = {}
    for t in study.trials:
        by_status.setdefault(t.user_attrs.get("status") or t.state.name, []).append(t.number)
    trained, retry = by_status["trained"]
    assert said[trained].startswith("trained to the end (3 epochs), accuracy 0.9100; repeated with seed 1 as trial")
    stopped = [said[n] for n in by_status["stopped"]]
    assert stopped == ["stopped early by the scheduler (pareto-asha) after epoch 1 of 3, accuracy 0.5200",
                       "stopped early by the time limit after epoch 2 of 3, accuracy 0.7000",
                       "stopped early by the time limit before its first epoch ended (no accuracy)"]
    failed, cut, cut_again = by_status["failed"]
    assert said[failed] == "failed: RuntimeError: the loss is nan"
    assert said[cut] == f"cut short (the search stopped before it finished) and retried as trial {retry}"
    assert said[retry].endswith(f"; a retry of trial {cut}, which the search stopped before it finished")
    (waiting,) = by_status["WAITING"]
    assert said[cut_again] == f"cut short (the search stopped before it finished), queued again as trial {waiting} (it trains first on the next run)"
    assert said[waiting].startswith("queued: the next run trains it first; a retry of trial")
    assert [said[n] for n in by_status["repeat"]] == [f"repeat of trial {trained} with seed 1, accuracy 0.8900",
                                                      f"repeat of trial {trained} with seed 2, accuracy 0.9000"]
    assert all(said[n].startswith("refused before training: ") for n in by_status["over_budget"] + by_status.get("duplicate", []))


def test_the_study_counts_queued_only_what_waits(lived):
    study, _, _ = lived
    found = endings(study.trials, StudyRecord(study))
    retry = next(t.number for t in study.trials if t.user_attrs.get("retry_of") is not None and t.state.is_finished())
    waiting = next(t.number for t in study.trials if t.state == optuna.trial.TrialState.WAITING)
    assert study_words(found) == (f"2 trained to the end, 3 stopped early (1 by the scheduler, 2 by the time limit), 1 failed, 2 cut short "
                                  f"(retried as trial {retry}; queued again as trial {waiting}), 2 trained again with another seed (confirm), "
                                  "1 queued to train first on the next run")
    assert found.waiting == {waiting}


def test_the_live_view_says_who_stopped_a_trial_and_which_trial_a_retry_retries():
    from nas.engine.events import SearchOpened, TrialEnded, TrialRequeued, TrialStarted
    from nas.front.live import SearchView
    from tests.conftest import tiny_config

    out = io.StringIO()
    view = SearchView(Console(file=out, width=200), study="s", epochs=3, live=False)
    view(SearchOpened(remaining=4, trials=4))
    view(TrialStarted(9, tiny_config(), 2e9, proposed_by="retry", retry_of=5))
    view(TrialEnded(9, "stopped", acc=0.94, epoch=2, reason="time limit"))
    view(TrialRequeued(10, "its Ray worker died (OOM)"))
    lines = out.getvalue()
    assert "trial   9 started (a retry of trial 5): bottleneck" in lines
    assert "trial   9 stopped early by the time limit after epoch 2 of 3, accuracy 0.9400; a retry of trial 5  (1 of 4 finished" in lines
    assert "trial  10 cut short (its Ray worker died (OOM)): its network is queued to train again" in lines
    assert view.ended == {"stopped_time": 1}
    panel = Console(file=io.StringIO(), width=200, record=True)
    panel.print(view)
    assert "1 of 4 trials finished (0 trained to the end, 1 stopped early by the time limit, 0 failed)" in panel.export_text()


def test_pareto_json_counts_trials_by_the_same_keys(lived):
    from nas.front.pareto import front_report

    study, _, _ = lived
    report = front_report(study).to_json()
    assert report["trials"] == {"trained": 2, "stopped_scheduler": 1, "stopped_time": 2, "failed": 1, "cut_short": 2, "repeat": 2,
                                "running": 0, "waiting": 1, "refused": sum(report["refused"].values())}
    assert set(report["refused"]) <= set(REFUSALS) and report["refused"]["over_budget"] >= 1
    assert report["proposed_by"] == {"random": 5, "retry": 1}
    front = {row["trial"]: row for row in report["front"]}
    assert any(row["seeds"] == 3 and row["accuracy"] == pytest.approx(0.9) for row in front.values())


def served(url: str, path: str, artifacts: Path | None = None) -> tuple[str, bytes]:
    """GET `path` from optuna-dashboard's own WSGI app over the view, in this process."""
    from wsgiref.util import setup_testing_defaults

    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    from nas.engine.storage import open_storage
    from nas.front.dashboard_view import TrainedTrialsView

    environ: dict = {"PATH_INFO": path.split("?")[0], "QUERY_STRING": path.partition("?")[2]}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = io.StringIO()
    status = []
    app = wsgi(TrainedTrialsView(open_storage(url)), artifact_store=FileSystemArtifactStore(artifacts) if artifacts else None)
    body = b"".join(app(environ, lambda s, h, exc=None: status.append(s)))
    return status[0], body


def test_the_dashboard_lists_each_training_once_with_its_ending_first_and_means_over_seeds(lived):
    study, url, _ = lived
    status, body = served(url, "/api/studies/1?after=0")
    assert status.startswith("200")
    detail = json.loads(body)
    shown = {t["number"]: t for t in detail["trials"]}
    said = sentences(study)
    listed = [t.number for t in study.trials if t.user_attrs.get("status") in ("trained", "stopped", "failed") or not t.state.is_finished()]
    listed = [n for n in listed if not said[n].startswith("cut short")]  # a trial cut short is listed as its retry
    assert sorted(shown) == sorted(listed)
    for number, trial in shown.items():
        assert trial["user_attrs"][0] == {"key": "ended", "value": said[number]}
    trained = next(n for n in shown if said[n].startswith("trained to the end (3 epochs), accuracy 0.91"))
    assert shown[trained]["values"][0] == pytest.approx(0.9)  # the mean over its three seeds, as `pareto` shows it
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert "identity" not in attrs  # not one JSON blob: in words
    assert attrs["budget"] == "up to 5.696 MFLOPs (fvcore, counted at 64 px with 10 classes)"
    assert attrs["proxy"].startswith("3 epochs of synthetic at 32 px, 768 images per epoch, batch 64, AdamW lr 0.002")
    assert attrs["resume with"].startswith("convspace search --budget 5.696256MFLOPs --study lived --space tiny.yaml")
    assert attrs["trials"] == study_words(endings(study.trials, StudyRecord(study)))


def test_publish_writes_the_front_as_notes_optuna_dashboard_reads_and_the_png_as_an_artifact(lived, tmp_path):
    from optuna_dashboard import get_note

    from nas.front.dashboard import artifact_folder, publish
    from nas.front.dashboard_notes import read_note

    study, url, folder = lived
    png = tmp_path / "lived-front.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfirst")
    assert publish(study, url, "pareto", [png]) is None
    note = get_note(study)
    assert note.startswith("### Pareto front of lived: proxy accuracy up, FLOPs down")
    assert "| 0.9000 ± 0.0100 | 3 |" in note and "**Noise floor** ± 0.0100" in note and "**Hypervolume** 0." in note
    assert "**Trials:** 2 trained to the end, 3 stopped early (1 by the scheduler, 2 by the time limit), 1 failed, 2 cut short" in note
    assert "**Refused before training:** " in note and "**Networks trained, chosen** 5 by random search, 1 retraining a trial cut short" in note
    said = sentences(study)
    for t in study.trials:
        body = get_note(optuna.trial.Trial(study, t._trial_id))
        if said[t.number].startswith("refused"):
            assert body == ""  # not listed: counted in the study's note
        else:
            assert body.startswith(f"**Trial {t.number}:** ") and said[t.number].split(" (")[0].split(",")[0] in body.replace("\\", "")
    # a rerun writes nothing that has not changed; a new picture replaces the old one of its name
    def system_attrs(study: optuna.Study) -> dict:
        return study._storage.get_study_system_attrs(study._study_id)

    versions = {k: v for k, v in system_attrs(study).items() if k.endswith("note_ver")}
    png.write_bytes(b"\x89PNG\r\n\x1a\nsecond")
    assert publish(study, url, "pareto", [png]) is None
    reloaded = optuna.load_study(study_name="lived", storage=url)
    assert {k: v for k, v in system_attrs(reloaded).items() if k.endswith("note_ver")} == versions
    assert read_note(system_attrs(reloaded), None) == note
    metas = [json.loads(v) for k, v in system_attrs(reloaded).items() if k.startswith("artifacts:")]
    live = [m for m in metas if m]
    assert [m["filename"] for m in live] == ["lived-front.png"] and len(metas) == 2  # the first one's record nulled
    assert artifact_folder(url) == folder / "lived.artifacts" and len(list((folder / "lived.artifacts").iterdir())) == 1
    status, body = served(url, f"/artifacts/1/{live[0]['artifact_id']}", folder / "lived.artifacts")
    assert status.startswith("200") and body.endswith(b"second")  # served by the dashboard from the store beside the study


def test_publish_on_a_study_it_cannot_write_says_why_instead_of_failing(tmp_path, monkeypatch):
    from nas.front import dashboard
    from tests.conftest import write_study

    study = write_study(tmp_path, "ro")

    def refuse(*args, **kwargs):
        import sqlite3

        import sqlalchemy.exc

        raise sqlalchemy.exc.OperationalError("UPDATE", {}, sqlite3.OperationalError("attempt to write a readonly database"))

    monkeypatch.setattr(study._storage, "set_study_system_attr", refuse)
    assert dashboard.publish(study, f"sqlite:///{tmp_path}/studies/ro.db", "pareto") == "attempt to write a readonly database"
