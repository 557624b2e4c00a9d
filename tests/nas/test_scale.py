"""Beyond one machine: a real PostgreSQL study shared by several drivers, the SQLite single-driver rule,
kill -9 of a driver on a shared study, a search through an existing Ray cluster, fractional-GPU packing."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine.record import counts_toward_total

ROOT = Path(__file__).resolve().parents[2]
TINY = [sys.executable, str(ROOT / "cli.py"), "search", "--budget", "40000000", "--space", str(Path(__file__).with_name("tiny_space.yaml")),
        "--data", "synthetic", "--seed", "1"]


def start(tmp_path, *args, log="driver"):
    out = open(tmp_path / f"{log}.log", "w")
    return subprocess.Popen([*TINY, *args], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def counted(study: optuna.Study) -> list:
    return [t for t in study.get_trials() if counts_toward_total(t)]


def test_search_pareto_and_export_on_postgresql(tmp_path, postgres_url):
    run = subprocess.run([*TINY, "--study", "pg", "--storage", postgres_url, "--trials", "3", "--epochs", "1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert len(counted(study)) == 3
    cli = [sys.executable, str(ROOT / "cli.py")]
    front = subprocess.run([*cli, "pareto", "--study", "pg", "--storage", postgres_url, "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert front.returncode == 0 and json.loads(front.stdout)["front"]
    export = subprocess.run([*cli, "export", "--study", "pg", "--storage", postgres_url, "--best", "--name", "pg_best"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "studies" / "exports" / "pg_best.py").exists()


@pytest.mark.slow  # 40-80 s; the driver numbers and distinct first configs are tested without servers in test_bridge.py
def test_four_drivers_on_one_postgresql_study(tmp_path, postgres_url):
    from tests.postgres import fresh_database

    postgres_url = fresh_database(postgres_url, "four_drivers")  # no schema yet: the drivers race to create it
    drivers = [start(tmp_path, "--study", "four", "--storage", postgres_url, "--trials", "8", "--epochs", "1", log=f"d{i}")
               for i in range(4)]
    for i, d in enumerate(drivers):
        assert d.wait(600) == 0, (tmp_path / f"d{i}.log").read_text()[-3000:]
    study = optuna.load_study(study_name="four", storage=postgres_url)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))  # no gaps
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = counted(study)
    assert len(done) == 8  # exactly what was asked, across the four drivers
    hashes = [t.user_attrs["hash"] for t in done]
    assert len(set(hashes)) == len(hashes)  # no config trained twice
    # each driver claimed its own number, so each sampled with its own seed (not in lockstep)
    storage = optuna.storages.RDBStorage(postgres_url)
    claims = storage.get_study_system_attrs(storage.get_study_id_from_name("four"))
    assert sorted(k for k in claims if k.startswith("convspace:driver:")) == [f"convspace:driver:{i}" for i in range(4)]


def test_sqlite_refuses_a_second_driver_and_points_at_postgresql(tmp_path):
    first = start(tmp_path, "--study", "lite", "--trials", "50", "--epochs", "30")
    try:
        deadline = time.time() + 120
        while not (tmp_path / "studies" / "lite.db").exists() and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        second = subprocess.run([*TINY, "--study", "lite", "--trials", "50", "--epochs", "30"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.startswith("error: storage: another driver is running on") and "postgresql" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)


def test_kill_9_on_a_shared_study_retrains_after_the_heartbeat_grace(tmp_path, postgres_url):
    args = ["--study", "beat", "--storage", postgres_url, "--epochs", "100", "--grace-period", "100", "--heartbeat-interval", "1",
            "--heartbeat-grace", "4"]
    victim = start(tmp_path, *args, "--trials", "3", "--cpus-per-trial", "2", log="victim")
    deadline = time.time() + 180
    running = []
    while time.time() < deadline and not running:
        time.sleep(1)
        try:
            running = [t for t in optuna.load_study(study_name="beat", storage=postgres_url).get_trials()
                       if t.state == TrialState.RUNNING and t.user_attrs.get("accepted")]
        except KeyError:
            continue
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    assert running, (tmp_path / "victim.log").read_text()[-2000:]
    lost = running[0]
    time.sleep(6)  # past the grace period
    rescue = subprocess.run([*TINY, *args, "--trials", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rescue.returncode == 0, rescue.stdout + rescue.stderr
    study = optuna.load_study(study_name="beat", storage=postgres_url)
    assert study.trials[lost.number].state == TrialState.FAIL
    retries = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == lost.number]
    assert len(retries) == 1 and retries[0].params == lost.params and counts_toward_total(retries[0])
    assert retries[0].user_attrs["retry_reason"] == "its driver stopped sending heartbeats"


RAY = str(Path(sys.executable).parent / "ray")
# A `ray start` cluster with token authentication, as Ray documents it: RAY_AUTH_MODE=token and the same token on
# every node and driver (here $RAY_AUTH_TOKEN; `ray get-auth-token --generate` writes ~/.ray/auth_token instead).
RAY_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
needs_ray_cli = pytest.mark.skipif(not Path(RAY).exists(), reason="ray CLI not installed")


@contextlib.contextmanager
def ray_node(*flags: str):
    """`ray start ... --block` in the background. Ended by a signal, it stops the processes it started and no others:
    `ray stop --force` would kill every Ray process on the machine, a concurrent run's (or this test process's) too."""
    node = subprocess.Popen([RAY, "start", *flags, "--block"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=RAY_ENV)
    try:
        yield node
    finally:
        node.terminate()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


@contextlib.contextmanager
def ray_head(*flags: str):
    """A Ray head on a free loopback port (its address is yielded once it answers), stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ray_node("--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false", *flags) as head:
        deadline = time.time() + 120
        while True:
            assert head.poll() is None and time.time() < deadline, "the Ray head did not start"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"


@needs_ray_cli
def test_search_through_an_existing_ray_cluster(tmp_path):
    with ray_head("--num-cpus=1") as address, ray_node(f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"):
        run = subprocess.run([*TINY, "--study", "cluster", "--trials", "2", "--epochs", "1", "--address", address],
                             cwd=tmp_path, capture_output=True, text=True, env=RAY_ENV, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        # without --address a search starts its own Ray, even beside a `ray start` cluster (which Ray would join)
        start = "import ray, nas.engine.ray_cluster; nas.engine.ray_cluster.init_ray(None); print(ray.get_runtime_context().gcs_address)"
        local = subprocess.run([sys.executable, "-c", start], cwd=ROOT, capture_output=True, text=True, env=RAY_ENV, timeout=120)
        assert local.returncode == 0 and local.stdout.strip() and local.stdout.strip() != address, local.stdout + local.stderr
        # a driver without the cluster's token is refused in one line, at once (Ray itself retries for minutes)
        other = {**RAY_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32), "HOME": str(tmp_path)}
        refused = subprocess.run([*TINY, "--study", "intruder", "--trials", "1", "--epochs", "1", "--address", address],
                                 cwd=tmp_path, capture_output=True, text=True, env=other, timeout=300)
        assert refused.returncode == 2 and refused.stderr.startswith(f"error: address: the Ray cluster at {address} refused this driver's token")
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    study = optuna.load_study(study_name="cluster", storage=f"sqlite:///{tmp_path}/studies/cluster.db")
    assert len(counted(study)) == 2


@needs_ray_cli
def test_fractional_gpus_pack_four_trials_on_one_gpu(tmp_path):
    """--gpus-per-trial 0.25 on a node with one GPU: four proxy trainings at a time, never more, although the
    CPUs would allow eight. The node declares its GPU to Ray's scheduler (this machine has none; the trainings
    fall back to the CPU), so what is tested is the packing, not CUDA."""
    with ray_head("--num-cpus=4", "--num-gpus=1") as address:
        run = subprocess.run([*TINY, "--study", "gpu", "--trials", "6", "--epochs", "400", "--grace-period", "400", "--gpus-per-trial", "0.25",
                              "--cpus-per-trial", "0.5", "--address", address],
                             cwd=tmp_path, capture_output=True, text=True, env=RAY_ENV, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    study = optuna.load_study(study_name="gpu", storage=f"sqlite:///{tmp_path}/studies/gpu.db")
    trained = [t for t in study.get_trials() if t.user_attrs.get("status") == "trained"]
    assert len(trained) == 6
    # each training's span: the trainable's own clock from its entry, up to when the trial was told. A trial that waits
    # for a slot starts after the tell that freed it, so spans of trials that never ran together do not overlap.
    spans = [(t.datetime_complete.timestamp() - t.user_attrs["trainable_seconds"], t.datetime_complete.timestamp()) for t in trained]
    at_once = max(sum(begin <= start < end for begin, end in spans) for start, _ in spans)
    assert at_once == 4, spans
