"""Faults under running trainings (issue 23): a Ray worker killed mid-trial costs its training once, not its network (queued
once more with its reason; Ray's report to the trial's folder, one line to the screen); `fidelity` and `ablation` store
each training as it ends; `confirm` runs sharing a PostgreSQL study never train or store the same (network, seed) pair.

The Ray tests share one local Ray for the module; each kills a real trial's worker process (SIGKILL, as the kernel's OOM
killer does) through the pid the trainable reports."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine.bridge import WORKER_DIED, BudgetedOptunaSearcher
from nas.engine.events import EpochEnded, RunEnded, RunRequeued, TrialEnded, TrialRequeued
from nas.engine.record import counts_toward_total
from nas.engine.search import open_search_study
from nas.engine.settings import SearchSettings, TrialResources
from nas.engine.storage import open_storage
from nas.evaluate.confirm import PairClaims, run_confirm
from nas.front.seeds import seed_scores
from space.choices import Space
from tests.conftest import tiny_config, write_study
from tests.postgres import fresh_database
from trainers.settings import ProxySettings

TINY_SPACE = Path(__file__).with_name("tiny_space.yaml")
BUDGET = 40_000_000
DIED = {"error": "worker process has died, SYSTEM_ERROR", WORKER_DIED: True,
        "ray_error": "Failure # 1\nThe actor died unexpectedly before finishing this task.", "ray_log": "/r/error.txt"}
PROXY = ProxySettings(epochs=3, data="synthetic", batch_size=16)  # the kill comes at epoch 1: the trial is still training
CPUS = os.cpu_count() or 1  # one trial at a time: each kill costs one worker start (importing torch), no more


def settings(tmp_path: Path, **changes) -> SearchSettings:
    return SearchSettings(**{"study": "w", "budget": BUDGET, "space": Space.from_yaml(TINY_SPACE), "storage": f"sqlite:///{tmp_path}/w.db",
                             "proxy": PROXY, "trials": 2, "sampler": "random", "seed": 3, "warm_start": False, **changes})


def test_a_trial_whose_worker_died_is_queued_once_more_with_its_reason_and_dying_again_fails_for_good(tmp_path):
    s = settings(tmp_path)
    study, storage = open_search_study(s)
    events = []
    bridge = BudgetedOptunaSearcher(study, storage, s, events.append)
    with bridge:
        first = bridge.suggest("t0")
        bridge.on_trial_complete("t0", dict(DIED), True)
        retry = bridge.suggest("t1")
        assert retry["config"] == first["config"]  # the same network trains again
        bridge.on_trial_complete("t1", dict(DIED), True)
    lost, again = study.get_trials()[:2]
    assert lost.state == TrialState.FAIL and not counts_toward_total(lost)  # no fault of its network: not counted
    assert lost.user_attrs["fail_reason"] == f"interrupted: its Ray worker died ({DIED['error']})"
    assert lost.user_attrs["ray_error"] == DIED["ray_error"]  # Ray's report kept on the trial
    assert again.user_attrs["retry_of"] == 0 and again.user_attrs["retry_reason"] == f"its Ray worker died ({DIED['error']})"
    # a network whose worker dies again (it may be what exhausts the memory) is not retried forever
    assert again.state == TrialState.FAIL and counts_toward_total(again)
    assert again.user_attrs["fail_reason"].endswith("(again: trial 0 lost its worker first)")
    assert [(type(e), e.number) for e in events if isinstance(e, (TrialRequeued, TrialEnded))] == [(TrialRequeued, 0), (TrialEnded, 1)]
    assert bridge.failures == [again.user_attrs["fail_reason"]]


def test_rays_report_of_a_dead_worker_is_said_in_a_few_words():
    from nas.engine.tune import death_reason

    killed = ("Failure # 1 (occurred at 2026-12-05_12-56-45)\nThe actor died unexpectedly before finishing this task.\n\tclass_name: "
              "ImplicitFunc\n\tpid: 8469\nThe actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker "
              "exit detail: Worker unexpectedly exits with a connection error code 2. End of file. Some common causes include: (1) ...")
    assert death_reason(killed) == "worker process has died, SYSTEM_ERROR"
    assert death_reason("Failure # 1\nThe actor died because its node has died. Node Id: 3d21\n\tclass_name: ImplicitFunc") == "node has died"
    assert death_reason("") == "no report from Ray"


def test_the_run_queue_retries_a_dead_worker_once_and_leaves_pairs_another_run_claimed():
    from nas.engine.tune import RunQueue

    ended, events, asked = [], [], []

    def claim(spec):
        asked.append(spec["n"])
        return spec["n"] != 2  # another run holds 2

    queue = RunQueue([{"n": 0}, {"n": 1}, {"n": 2}], lambda spec, result: ended.append((spec["n"], result)), limit=2,
                     claim=claim, progress=events.append, name=lambda spec: f"n{spec['n']}")
    assert queue.suggest("a") == {"n": 0} and queue.suggest("b") == {"n": 1} and queue.suggest("c") is None  # two at once
    queue.on_trial_complete("a", {WORKER_DIED: True, "error": "node has died"}, True)
    assert events == [RunRequeued("n0", "its Ray worker died (node has died)", None)] and not ended
    assert queue.suggest("c") == {"n": 0}  # first, under the claim it holds already
    queue.on_trial_complete("b", {"acc": 0.5}, False)
    assert queue.suggest("d") is None and not queue.done  # 2 is left to its run; 0 may still come back
    queue.on_trial_complete("c", {WORKER_DIED: True, "error": "node has died"}, True)
    assert queue.done and asked == [0, 1, 2]
    assert ended == [(1, {"acc": 0.5}), (0, {WORKER_DIED: True, "error": "its Ray worker died (node has died) again"})]


def test_confirm_claims_on_postgresql_go_to_one_run_each_and_lapse_or_free_when_their_run_stops(postgres_url):
    url = fresh_database(postgres_url, "claims")
    study = optuna.create_study(study_name="c", storage=open_storage(url), directions=["maximize", "minimize"])
    study_id = study._study_id
    runs = [PairClaims(open_storage(url), study_id) for _ in range(4)]  # four runs, each with its own connections
    start, won = threading.Barrier(4), []

    def run(claims: PairClaims) -> None:
        start.wait()
        won.extend((n, s) for n in range(3) for s in (1, 2) if claims.claim(n, s))

    threads = [threading.Thread(target=run, args=(claims,)) for claims in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(won) == sorted({(n, s) for n in range(3) for s in (1, 2)})  # each pair claimed, by one run only
    # a run killed stops renewing: its claim lapses after the grace period; a released one is free at once
    killed, other = PairClaims(open_storage(url), study_id, grace=1.0), PairClaims(open_storage(url), study_id, grace=1.0)
    assert killed.claim(7, 1) and killed.claim(8, 1) and not other.claim(7, 1)
    killed.release(8, 1)
    assert other.claim(8, 1)
    killed.close()
    time.sleep(1.1)
    assert other.claim(7, 1)
    for claims in [*runs, killed, other]:
        claims.close()


@pytest.fixture(scope="module")
def ray_started():
    """One local Ray for this module's tests (the runs below find it started); shut down after them."""
    import ray

    from nas.engine.ray_cluster import init_ray

    init_ray(None)
    yield
    ray.shutdown()


def killer(events: list):
    """A progress callback that SIGKILLs the worker of the first trial to report an epoch (as an OOM kill would)."""
    def progress(event) -> None:
        if isinstance(event, EpochEnded) and not any(e == "killed" for e in events):
            events.append("killed")
            os.kill(event.pid, signal.SIGKILL)
        events.append(event)
    return progress


def test_a_search_trial_whose_worker_is_killed_trains_again_and_the_screen_gets_one_line(tmp_path, ray_started, capfd):
    from nas.engine.search import run_search

    events = []
    outcome = run_search(settings(tmp_path, trials=1, scheduler="none", cpus_per_trial=CPUS,
                                  storage=f"sqlite:///{tmp_path}/studies/w.db"), killer(events))
    [lost] = [t for t in outcome.study.get_trials() if t.state == TrialState.FAIL]
    [retry] = [t for t in outcome.study.get_trials() if t.state == TrialState.COMPLETE]
    assert retry.user_attrs["retry_of"] == lost.number and retry.user_attrs["config"] == lost.user_attrs["config"]
    assert lost.user_attrs["fail_reason"].startswith("interrupted: its Ray worker died (worker process has died")
    assert "The actor died unexpectedly" in lost.user_attrs["ray_error"]
    [requeued] = [e for e in events if isinstance(e, TrialRequeued)]
    assert Path(requeued.ray_log).read_text().endswith(lost.user_attrs["ray_error"])  # Ray's report in the trial's folder
    assert outcome.ended == {"trained": 1} and not outcome.failures
    shown = capfd.readouterr()
    for noise in ("Traceback", "worker died or was killed", "Trials did not complete", "ActorDiedError"):
        assert noise not in shown.out + shown.err, noise


def test_fixed_networks_are_stored_as_each_ends_and_one_whose_worker_died_trains_again(tmp_path, ray_started):
    from nas.evaluate.fixed import Job, train_fixed

    url = f"sqlite:///{tmp_path}/f.db"
    study = optuna.create_study(study_name="f", storage=url, directions=["maximize", "minimize"])
    jobs = [Job("a", tiny_config(), {"sample": 0}), Job("b", tiny_config(act="relu"), {"sample": 1})]
    events, stored_at_done = [], []
    kill = killer(events)

    def progress(event) -> None:
        kill(event)
        if isinstance(event, RunEnded):  # what a kill now would leave: read back from the file, not from this process
            stored_at_done.append(sorted(t.user_attrs["sample"] for t in optuna.load_study(study_name="f", storage=url).trials))

    train_fixed(study, url, "f", PROXY, jobs, resources=TrialResources(cpus_per_trial=CPUS),
                results_dir=str(tmp_path / "ray"), progress=progress)
    [requeued] = [e for e in events if isinstance(e, RunRequeued)]
    assert requeued.name in ("a", "b") and requeued.reason.startswith("its Ray worker died")
    assert len(stored_at_done) == 2 and len(stored_at_done[0]) == 1 and stored_at_done[1] == [0, 1]  # each stored as it ended


def test_two_confirm_runs_at_once_on_postgresql_never_train_or_store_the_same_pair(tmp_path, postgres_url, monkeypatch):
    """Two real runs of run_confirm in threads on one PostgreSQL study, each with its own connections and claims; the
    training itself is faked (Ray's part is tested above), each taking a moment so that the runs overlap."""
    import nas.engine.ray_cluster
    import nas.engine.tune

    url = fresh_database(postgres_url, "confirm_shared")
    write_study(tmp_path, "c").set_user_attr("identity", {"cost_resolution": 224, "proxy": {
        k: v for k, v in PROXY.to_dict().items() if k != "threads"}})
    optuna.copy_study(from_study_name="c", from_storage=f"sqlite:///{tmp_path}/studies/c.db", to_storage=url)
    trained, lock = [], threading.Lock()

    def train_queue(key, proxy, results, queue, *, cpus, gpus, progress=None):
        for n in range(100):
            spec = queue.suggest(f"{threading.get_ident()}-{n}")
            if spec is None:
                return
            with lock:
                trained.append((spec["number"], spec["seed"]))
            time.sleep(0.5)
            accuracy = {0: 0.9, 1: 0.8}[spec["number"]]  # as first trained: the front on the means stays trials 1 and 0
            queue.on_trial_complete(f"{threading.get_ident()}-{n}", {"acc": accuracy, "epoch": proxy.epochs}, False)

    monkeypatch.setattr(nas.engine.tune, "train_queue", train_queue)
    monkeypatch.setattr(nas.engine.ray_cluster, "init_ray", lambda address: None)
    start, outcomes = threading.Barrier(2), []

    def run() -> None:
        start.wait()
        outcomes.append(run_confirm("c", url, seeds=3, results_dir=str(tmp_path / "ray")))

    runs = [threading.Thread(target=run) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(120)
    pairs = {(n, s) for n in (0, 1) for s in (1, 2)}  # the front's two networks, two more seeds each
    assert sorted(trained) == sorted(pairs)  # each pair trained once, by one run or the other
    assert sorted(o.trained for o in outcomes) != [0, 0] and sum(o.trained for o in outcomes) == 4
    study = optuna.load_study(study_name="c", storage=url)
    repeats = [(t.user_attrs["repeat_of"], t.user_attrs["seed"]) for t in study.get_trials() if t.user_attrs.get("status") == "repeat"]
    assert sorted(repeats) == sorted(pairs)  # and stored once
    assert seed_scores(study)[0].seeds == (0, 1, 2) == seed_scores(study)[1].seeds
    # a rerun finds every pair stored: nothing to train, nothing claimed
    again = run_confirm("c", url, seeds=3, results_dir=str(tmp_path / "ray"))
    assert again.trained == 0 and not again.elsewhere and len(trained) == 4
