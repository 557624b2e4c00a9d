"""The trial record (nas.engine.record): the one door to what trials and studies store, and studies stored before it read the same."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import optuna
import pytest

from nas.engine.record import Status, StudyRecord, TrialRecord, enqueue, new_trial, proposed_by, write_stored
from tests.nas.lived_study import lived_study
from tests.nas.stored_format import FIXTURE, dump, load, readings

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]


def test_a_study_stored_before_the_record_reads_the_same_everywhere(tmp_path):
    """tests/nas/stored_study.json: the lived study with an older study's leftovers (refusals kept as study counts, a trial
    from before `proposed_by`), and what `pareto`, the dashboard, export and the search read of it, written by the code
    before TrialRecord (see tests/nas/stored_format.py)."""
    stored = json.loads(FIXTURE.read_text())
    study = load(stored, f"sqlite:///{tmp_path}/stored.db")
    now = readings(study)
    for key, before in stored["readings"].items():
        assert now[key] == before, key
    assert now.keys() == stored["readings"].keys()


VARY = {"wall_seconds", "proxy", "config", "hash", "flops", "params", "hypervolume"}  # timing, paths, and what the sampler drew


def test_the_search_stores_the_same_attributes_under_the_same_names_as_before(tmp_path):
    """The same search, run by today's code, stores each trial's attributes under the names (and, where no clock, path or
    sampled network enters, the values) that the code before TrialRecord stored."""
    before = json.loads(FIXTURE.read_text())
    study, _ = lived_study(tmp_path)
    now = dump(study)
    assert now["user_attrs"].keys() == before["user_attrs"].keys() - {"rejected_over_budget", "rejected_unfit"}  # added by hand there
    assert len(now["trials"]) == len(before["trials"]) - 1  # there: one trial more, from before `proposed_by`
    for was, new in zip(before["trials"], now["trials"]):
        assert (new["number"], new["state"]) == (was["number"], was["state"])
        assert new["user_attrs"].keys() == was["user_attrs"].keys(), new["number"]
        for key, value in new["user_attrs"].items():
            if key in VARY:
                assert type(value) is type(was["user_attrs"][key]), (new["number"], key)
            else:
                assert value == was["user_attrs"][key], (new["number"], key)


def test_the_record_reads_each_attribute_typed_and_refuses_to_write_a_name_it_does_not_declare():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    record = TrialRecord(trial)
    record.write({"status": Status.TRAINED, "flops": 5, "retry_of": 3})
    assert (record.status, record.flops, record.retry_of, record.seed) == ("trained", 5, 3, None)
    with pytest.raises(ValueError, match="undeclared attributes stauts"):
        record.write({"stauts": "trained"})
    assert "stauts" not in trial.user_attrs  # nothing written
    with pytest.raises(ValueError, match="undeclared"):
        StudyRecord(study).write({"budgte": 1})
    with pytest.raises(ValueError, match="undeclared"):
        new_trial({"preset": "resnet50", "presett": "x"}, values=[0.5, 1.0])
    with pytest.raises(ValueError, match="undeclared"):
        enqueue(study, {}, {"retry": 1}, skip_if_exists=False)
    with pytest.raises(ValueError, match="undeclared"):
        write_stored(study._storage, trial._trial_id, {"fail": "x"})


def test_who_chose_a_network_reads_from_trials_of_every_age():
    def chosen(**attrs: object) -> str:
        return proposed_by(new_trial(attrs, values=[0.5, 1.0]))

    assert chosen(proposed_by="warm_start", retry_of=2) == "warm_start"  # said by the trial itself
    assert chosen(screened=True) == "random"  # before proposed_by: a random in-band draw replaced the proposal
    assert chosen(retry_of=2) == "retry"
    assert chosen() == "sampler"


def test_a_study_record_reads_the_same_through_the_study_or_its_storage():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("budget", 10)
    study.set_user_attr("rejected_over_budget", 4)
    through_storage = StudyRecord.stored(study._storage, study._study_id)
    assert StudyRecord(study).budget == through_storage.budget == 10
    assert StudyRecord(study).screened == through_storage.screened == {"over_budget": 4}
    through_storage.write({"hypervolume": 0.5})
    assert StudyRecord(study).hypervolume == 0.5


# Optuna's storage interface, which the dashboard's read view implements by passing each call to the storage it wraps
FORWARDED = re.compile(r"def (get|set)_(study|trial)_user_attrs?\(|self\._storage\.(get|set)_(study|trial)_user_attrs?\(")
TOUCHES = re.compile(r"user_attrs|set_user_attr|set_(study|trial)_user_attr")


def test_no_source_file_but_the_record_touches_stored_attributes():
    """The goal of nas.engine.record: every read and write of a trial's or a study's attributes goes through it."""
    sources = [*(ROOT / "nas").rglob("*.py"), *(ROOT / "space").rglob("*.py"), *(ROOT / "trainers").rglob("*.py"), ROOT / "cli.py"]
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in sources if path != ROOT / "nas" / "engine" / "record.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if TOUCHES.search(line) and not FORWARDED.search(line)]
    assert found == [], "read and write them through nas.engine.record (TrialRecord, StudyRecord, new_trial, enqueue):\n" + "\n".join(found)
