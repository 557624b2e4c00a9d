"""Secrets and exposure (issue 15): a database password never reaches the screen, a study, an export, Ray's files or
its job table; libpq's PGPASSWORD / PGPASSFILE and $CONVSPACE_STORAGE keep it off the command line; the dashboard
stays on loopback unless asked; a cluster gets our packages and nothing else of the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from nas.engine.settings import check_host, is_loopback
from nas.engine.storage import display_url, has_password, hide_password, mask_passwords
from space.errors import ConvspaceError
from tests.conftest import write_study

ROOT = Path(__file__).resolve().parents[2]
TINY_SPACE = Path(__file__).with_name("tiny_space.yaml")
SECRET = "SECRETpw"
UNREACHABLE = f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db"  # nothing listens on port 1: refused at once
SEARCH = ["search", "--budget", "40000000", "--space", str(TINY_SPACE), "--data", "synthetic", "--epochs", "1", "--seed", "1"]


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; `env` adds to (or, with None values, removes from) this process's environment."""
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, env=full, timeout=timeout)


def no_secret_in(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, text


def files_holding(folder: Path, secret: str = SECRET) -> list[Path]:
    """Every file under `folder` whose bytes contain the secret."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


@pytest.fixture
def short_tmp():
    """A short temporary folder (Ray's unix sockets must fit in 107 characters), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="cs-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- masking itself ---


def test_display_and_mask_hide_every_form_of_password():
    assert display_url(UNREACHABLE) == "postgresql+psycopg2://u:***@127.0.0.1:1/db"
    assert display_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert display_url("garbage://u:SECRETpw@h:notaport/db") == "garbage://u:***@h:notaport/db"  # SQLAlchemy cannot parse it
    assert display_url("postgresql://u@h/db") == "postgresql://u@h/db" and display_url("sqlite:///studies/s.db") == "sqlite:///studies/s.db"
    line = f"python cli.py pareto --storage {UNREACHABLE} --study s x://a:b@c"
    assert mask_passwords(line) == "python cli.py pareto --storage postgresql+psycopg2://u:***@127.0.0.1:1/db --study s x://a:***@c"
    assert mask_passwords("http://127.0.0.1:8080/dashboard a@b") == "http://127.0.0.1:8080/dashboard a@b"
    assert has_password(UNREACHABLE) and not has_password("postgresql://u@h/db") and not has_password("sqlite:///s.db")
    # libpq also takes the password as a query argument (SQLAlchemy passes the query to the driver)
    assert display_url(f"postgresql://u@h/db?sslmode=require&password={SECRET}") == "postgresql://u@h/db?sslmode=require&password=***"
    assert mask_passwords(f"--storage 'postgresql://u@h/db?PWD={SECRET}&x=1'") == "--storage 'postgresql://u@h/db?PWD=***&x=1'"
    assert has_password(f"postgresql://u@h/db?password={SECRET}")
    assert hide_password(f"auth failed for {SECRET}", f"postgresql://u@h/db?password={SECRET}") == "auth failed for ***"


# --- failing commands: one line, no password ---


@pytest.mark.parametrize(
    "args",
    [["pareto"], ["export", "--best"], ["dashboard"], [*SEARCH, "--trials", "1"]],
    ids=["pareto", "export", "dashboard", "search"],
)
def test_a_command_on_an_unreachable_server_never_shows_the_password(tmp_path, args):
    run = cli(tmp_path, *args, "--storage", UNREACHABLE)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("error: storage: cannot open 'postgresql+psycopg2://u:***@127.0.0.1:1/db'")
    assert len(run.stderr.strip().splitlines()) == 1
    no_secret_in(run.stdout, run.stderr)
    assert not (tmp_path / "studies").exists()


def test_the_password_stays_hidden_in_usage_errors_env_urls_and_unparsable_urls(tmp_path):
    # a URL given without --storage: click's "unexpected extra argument (URL)"
    extra = cli(tmp_path, "pareto", UNREACHABLE)
    assert extra.returncode == 2 and "u:***@127.0.0.1" in extra.stderr
    # the default storage from the environment
    env = cli(tmp_path, "pareto", env={"CONVSPACE_STORAGE": UNREACHABLE})
    assert env.returncode == 2 and env.stderr.startswith("error: storage: cannot open 'postgresql+psycopg2://u:***@")
    # a port that is not a number: SQLAlchemy's ValueError was a traceback
    bad = cli(tmp_path, "pareto", "--storage", f"postgresql+psycopg2://u:{SECRET}@h:notaport/db")
    assert bad.returncode == 2 and bad.stderr.startswith("error: storage: cannot open 'postgresql+psycopg2://u:***@h:notaport/db'")
    # the password as a query argument
    query = cli(tmp_path, "pareto", "--storage", f"postgresql+psycopg2://u@127.0.0.1:1/db?password={SECRET}")
    assert query.returncode == 2 and query.stderr.startswith("error: storage: cannot open 'postgresql+psycopg2://u@127.0.0.1:1/db?password=***'")
    for run in (extra, env, bad, query):
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        no_secret_in(run.stdout, run.stderr)


# --- a real PostgreSQL server that asks for the password ---


@pytest.fixture(scope="module")
def pg_with_password():
    """A PostgreSQL cluster whose TCP connections need the password (scram-sha-256): its URL without the password."""
    from tests.postgres import find_initdb, postgres_server

    initdb = find_initdb()
    if not initdb:
        pytest.skip("no PostgreSQL server binary (initdb) on this machine")
    with postgres_server(initdb, password=SECRET) as url:
        yield url


def with_password(url: str) -> str:
    return url.replace("postgres@", f"postgres:{SECRET}@", 1)


KEEP_RESULTS = """
import contextlib, runpy, sys
from pathlib import Path
sys.path.insert(0, {root!r})
import nas.engine.storage

@contextlib.contextmanager
def kept(url, chosen=None):  # Ray's results of a PostgreSQL study go to a temporary folder: keep them to look at
    yield Path({results!r})

nas.engine.storage.results_folder = kept
sys.argv = [{cli!r}, *sys.argv[1:]]
runpy.run_path({cli!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def searched(pg_with_password, tmp_path_factory):
    """A tiny search into the password-protected server with the password in --storage (and in $PGPASSWORD, which
    Ray's local workers inherit); Ray's results folder and its temporary files (session logs) kept to look into."""
    work = tmp_path_factory.mktemp("secret")
    ray_tmp = Path(tempfile.mkdtemp(prefix="cs-"))
    (work / "results").mkdir()
    script = work / "keep_results.py"
    script.write_text(KEEP_RESULTS.format(root=str(ROOT), results=str(work / "results"), cli=str(ROOT / "cli.py")))
    args = [*SEARCH, "--trials", "2", "--study", "pw", "--storage", with_password(pg_with_password)]
    env = {**os.environ, "TMPDIR": str(ray_tmp), "PGPASSWORD": SECRET}  # Ray's local workers inherit the driver's environment
    run = subprocess.run([sys.executable, str(script), *args], cwd=work, capture_output=True, text=True, timeout=600, env=env)
    try:
        yield work, ray_tmp, run
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_search_with_the_password_in_the_url_keeps_it_out_of_output_study_and_ray_files(searched, pg_with_password):
    import optuna

    work, ray_tmp, run = searched
    assert run.returncode == 0, run.stdout + run.stderr
    no_secret_in(run.stdout, run.stderr)
    assert "postgres:***@127.0.0.1" in run.stdout and "*** stands for the password" in run.stdout
    storage = optuna.storages.RDBStorage(with_password(pg_with_password))
    study = optuna.load_study(study_name="pw", storage=storage)
    assert len([t for t in study.trials if t.user_attrs.get("status") in ("trained", "stopped")]) == 2
    system_attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("pw"))
    stored = [study.user_attrs, system_attrs] + [[t.params, t.user_attrs, t.system_attrs] for t in study.trials]
    no_secret_in(json.dumps(stored, default=str))
    assert any((work / "results").rglob("experiment_state*.json")), "Ray's results were not where the test looks"
    assert files_holding(work / "results") == []
    assert any(ray_tmp.rglob("raylet.out")), "Ray's session logs were not where the test looks"
    assert files_holding(ray_tmp) == []


def test_export_of_a_study_opened_with_a_password_writes_no_password(searched, pg_with_password, tmp_path):
    assert searched[2].returncode == 0
    run = cli(tmp_path, "export", "--study", "pw", "--best", "--name", "pw_best", "--out", "zoo", "--storage", with_password(pg_with_password))
    assert run.returncode == 0, run.stdout + run.stderr
    no_secret_in(run.stdout, run.stderr)
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["pw_best.py", "pw_best.yaml"]
    assert files_holding(tmp_path / "zoo") == [] and files_holding(tmp_path, "127.0.0.1") == []  # not even the server


def test_pgpassword_pgpassfile_and_convspace_storage_keep_the_password_off_the_command_line(searched, pg_with_password, tmp_path):
    assert searched[2].returncode == 0
    url = pg_with_password  # no password in it
    clean = {"PGPASSWORD": None, "PGPASSFILE": str(tmp_path / "none"), "CONVSPACE_STORAGE": None}  # nothing from this machine
    refused = cli(tmp_path, "pareto", "--study", "pw", "--storage", url, env=clean)
    assert refused.returncode == 2 and "no password supplied" in refused.stderr  # the server does ask for it
    by_env = cli(tmp_path, "pareto", "--study", "pw", "--storage", url, env={**clean, "PGPASSWORD": SECRET})
    assert by_env.returncode == 0 and "Pareto front of pw" in by_env.stdout, by_env.stderr
    host, port = url.split("@")[1].split("/")[0].split(":")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{host}:{port}:*:postgres:{SECRET}\n")
    pgpass.chmod(0o600)  # libpq ignores a pgpass file others can read
    by_file = cli(tmp_path, "pareto", "--study", "pw", "--storage", url, env={**clean, "PGPASSFILE": str(pgpass)})
    assert by_file.returncode == 0 and "Pareto front of pw" in by_file.stdout, by_file.stderr
    by_default = cli(tmp_path, "pareto", "--study", "pw", env={**clean, "PGPASSFILE": str(pgpass), "CONVSPACE_STORAGE": url})
    assert by_default.returncode == 0 and "Pareto front of pw" in by_default.stdout, by_default.stderr
    # the command line wins over $CONVSPACE_STORAGE
    wins = cli(tmp_path, "pareto", "--study", "pw", "--storage", url, env={**clean, "PGPASSFILE": str(pgpass), "CONVSPACE_STORAGE": UNREACHABLE})
    assert wins.returncode == 0 and "Pareto front of pw" in wins.stdout, wins.stderr
    for run in (refused, by_env, by_file, by_default, wins):
        no_secret_in(run.stdout, run.stderr)
    assert not (tmp_path / "studies").exists()  # no SQLite fallback was made


def test_an_entry_that_names_its_storage_keeps_the_password_out_of_timm_notes(tmp_path):
    import yaml

    from nas.export.zoo import load_entry
    from tests.conftest import tiny_config

    entry = tmp_path / "by_hand.yaml"
    entry.write_text(yaml.safe_dump({"name": "by_hand", "study": "s", "trial": 3, "storage": UNREACHABLE, "config": tiny_config().to_dict()}))
    _, cfgs = load_entry(entry)
    notes = cfgs["by_hand"].default.notes
    assert "storage=postgresql+psycopg2://u:***@127.0.0.1:1/db" in notes and "study=s" in notes
    no_secret_in(repr(cfgs))


def serve(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Run `dashboard` until its API answers on loopback (with the token of the URL it printed), stop it; its stdout
    and stderr."""
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "dashboard", "--port", "0", *args], cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    try:
        first = server.stdout.readline()  # printed once the port is bound
        assert "?token=" in first, first + server.stderr.read()
        url = first[first.index("http://"):].split()[0]
        request = urllib.request.Request(url.split("/dashboard/")[0] + "/api/studies",
                                         headers={"Authorization": "Bearer " + url.partition("?token=")[2]})
        body = json.load(urllib.request.urlopen(request, timeout=10))
        assert body["study_summaries"]
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    return first + out, err


def test_dashboard_on_a_study_opened_with_a_password_shows_no_password(searched, pg_with_password, tmp_path):
    assert searched[2].returncode == 0
    out, err = serve(tmp_path, "--study", "pw", "--storage", with_password(pg_with_password))
    assert "optuna-dashboard for study pw: http://127.0.0.1:" in out
    no_secret_in(out, err)


# --- the dashboard's host ---


def test_loopback_hosts_are_served_and_others_need_allow_remote():
    for host in ("127.0.0.1", "127.0.1.1", "localhost", "LocalHost", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(host) and check_host(host, allow_remote=False) is False, host
    for host in ("0.0.0.0", "::", "192.168.1.20", "10.0.0.7", "203.0.113.5"):
        assert not is_loopback(host), host
        with pytest.raises(ConvspaceError, match=f"^host: {host} is not a loopback address: .*--allow-remote"):
            check_host(host, allow_remote=False)
        assert check_host(host, allow_remote=True) is True


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_dashboard_refuses_a_non_loopback_host_in_one_line(tmp_path, host):
    started = time.time()
    run = cli(tmp_path, "dashboard", "--host", host, "--storage", UNREACHABLE)  # the host is checked before the storage
    assert run.returncode == 2 and run.stderr.startswith(f"error: host: {host} is not a loopback address")
    assert "ssh -L 8080:127.0.0.1:8080" in run.stderr and len(run.stderr.strip().splitlines()) == 1 and run.stdout == ""
    assert time.time() - started < 10  # refused before optuna or the storage is touched


def test_dashboard_with_allow_remote_warns_that_plain_http_carries_the_token(tmp_path):
    # an unknown study, so that the test opens nothing to the network: the warning comes first, then the study's error
    write_study(tmp_path, "s")
    run = cli(tmp_path, "dashboard", "--study", "nope", "--host", "0.0.0.0", "--port", "9000", "--allow-remote")
    warning, error = run.stderr.strip().splitlines()
    assert warning.startswith("warning: the dashboard on 0.0.0.0:9000 can be reached from other machines: it still asks for its token")
    assert "plain HTTP carries the token and the study unencrypted" in warning and "(ssh -L 9000:127.0.0.1:9000 HOST)" in warning
    assert run.returncode == 2 and error.startswith("error: study: no study 'nope'")


# --- what a cluster's workers get ---


def fake_project(root: Path) -> Path:
    """A checkout with our three packages beside what must never travel: a .env, a large file, a data/ folder."""
    for name in ("space", "trainers", "nas"):
        (root / name / "sub").mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"WHERE = 'uploaded {name}'\n")
        (root / name / "sub" / "table.yaml").write_text("kept: true\n")  # data files inside a package travel with it
        (root / name / "__pycache__").mkdir()
        (root / name / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"0")
    (root / ".env").write_text(f"PGPASSWORD={SECRET}\n")
    with (root / "big.bin").open("wb") as big:
        big.truncate(600 * 2**20)  # sparse: over Ray's 512 MiB package limit, nothing written to disk
    (root / "data" / "cifar-10-batches-py").mkdir(parents=True)
    (root / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\0" * 1024)
    (root / "credentials.json").write_text(json.dumps({"password": SECRET}))
    return root


def test_cluster_runtime_env_ships_only_our_packages(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    from nas.engine.ray_cluster import WORKER_PACKAGES, _cluster_runtime_env

    root = fake_project(tmp_path / "checkout")
    env = _cluster_runtime_env(root)
    assert "working_dir" not in env and env["py_modules"] == [str(root / name) for name in WORKER_PACKAGES]
    shipped = []
    for i, module in enumerate(env["py_modules"]):  # the zips Ray uploads for them
        create_package(module, tmp_path / f"pkg{i}.zip", include_gitignore=True, include_parent_dir=True, excludes=env["excludes"])
        shipped += zipfile.ZipFile(tmp_path / f"pkg{i}.zip").namelist()
    files = sorted(name for name in shipped if not name.endswith("/"))
    assert files == sorted(f"{p}/{f}" for p in ("space", "trainers", "nas") for f in ("__init__.py", "sub/table.yaml")), files
    real = _cluster_runtime_env()  # this checkout: the three package folders, nothing above them
    assert [Path(p).relative_to(ROOT).as_posix() for p in real["py_modules"]] == ["space", "trainers", "nas"]


WORKER = """
import json, os, sys
from pathlib import Path
import ray
import nas.engine.ray_cluster

@ray.remote
def look():
    import nas, space.choices, trainers.proxy  # what a worker imports to train, from what was uploaded
    unpacked = Path(nas.__file__).parents[2]  # runtime_resources/py_modules_files: every package uploaded
    return {"nas": nas.__file__, "where": getattr(nas, "WHERE", "checkout"), "cwd": sorted(os.listdir(os.getcwd())),
            "files": sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file())}

# init_ray as with --address, on a local cluster (\"local\"), with the packages of the fake checkout
env = nas.engine.ray_cluster._cluster_runtime_env(Path(sys.argv[1]))
nas.engine.ray_cluster._cluster_runtime_env = lambda: env
nas.engine.ray_cluster.init_ray("local")
seen = ray.get(look.remote())
seen["jobs"] = [job["Entrypoint"] for job in ray._private.state.jobs()]
print(json.dumps(seen))
"""


def test_a_cluster_worker_gets_our_packages_only_and_rays_job_table_no_password(tmp_path, short_tmp):
    root = fake_project(tmp_path / "checkout")
    (root / "space" / "choices.py").write_text("")  # the fake packages hold what the worker imports
    (root / "trainers" / "proxy.py").write_text("")
    elsewhere = tmp_path / "driver"  # not the checkout: the worker must not find the packages beside the driver
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-c", WORKER, str(root), "--storage", UNREACHABLE], cwd=elsewhere, capture_output=True,
                         text=True, timeout=180, env={**os.environ, "TMPDIR": str(short_tmp), "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["where"] == "uploaded nas" and seen["nas"].startswith(str(short_tmp)), seen
    names = " ".join(seen["files"] + seen["cwd"])
    for never in (".env", "big.bin", "data_batch_1", "credentials.json", ".pyc"):
        assert never not in names, (never, seen)
    assert {"space/sub/table.yaml", "trainers/sub/table.yaml", "nas/sub/table.yaml"} <= {f.split("/", 1)[1] for f in seen["files"] if "/" in f}
    # Ray keeps the driver's command line as the job's entrypoint (`ray list jobs`, a cluster's dashboard)
    assert seen["jobs"] and all("--storage postgresql+psycopg2://u:***@127.0.0.1:1/db" in e for e in seen["jobs"]), seen["jobs"]
    no_secret_in(run.stdout, run.stderr)
    assert files_holding(short_tmp) == []
