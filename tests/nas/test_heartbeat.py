"""The heartbeat (nas.engine.heartbeat): a live trial beats while the `with` block runs and no longer after it; a trial it is not
told of goes stale and is failed by whoever looks; a storage fault is told once, and the beats go on."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from nas.engine.heartbeat import Heartbeat
from nas.engine.storage import open_storage


def test_live_trials_beat_inside_the_block_the_rest_go_stale_and_the_thread_ends_with_it(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/h.db", heartbeat=(1, 2))
    study = optuna.create_study(study_name="h", storage=storage, directions=["maximize", "minimize"])
    kept, left = study.ask(), study.ask()
    with Heartbeat(storage, study._study_id, lambda: [kept.number]) as heartbeat:
        heartbeat.beat(left.number)  # beats once when asked, then never again
        thread = heartbeat._thread
        time.sleep(3)
        optuna.storages.fail_stale_trials(study)
        states = {t.number: t.state for t in study.get_trials()}
        assert states[kept.number] == TrialState.RUNNING and states[left.number] == TrialState.FAIL
    assert not thread.is_alive() and heartbeat._thread is None


def test_a_storage_fault_is_told_once_and_the_beats_go_on(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/h.db", heartbeat=(1, 60))
    study = optuna.create_study(study_name="h", storage=storage, directions=["maximize", "minimize"])
    trial = study.ask()
    with storage.engine.begin() as connection:  # what a damaged file or a dropped schema does to the next beat
        connection.exec_driver_sql("DROP TABLE trial_heartbeats")
    told = []
    with Heartbeat(storage, study._study_id, lambda: [trial.number], on_fault=told.append) as heartbeat:
        time.sleep(2.5)  # two intervals, two failed beats
        thread = heartbeat._thread
        assert thread.is_alive() and heartbeat.fault is not None
    assert told == ["no such table: trial_heartbeats"]


def test_a_storage_without_heartbeats_starts_no_thread(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/h.db")
    study = optuna.create_study(study_name="h", storage=storage, directions=["maximize", "minimize"])
    with Heartbeat(storage, study._study_id, lambda: [study.ask().number]) as heartbeat:
        heartbeat.beat(0)  # nothing to do, and no error
        assert heartbeat._thread is None
