"""Nobody else in (issue 21): a local search's Ray cluster listens on loopback and admits no client without its token,
its processes do not inherit the storage's password; the dashboard wants its launch token and its own Host; exports are
data (a hostile study name or zoo folder runs nothing); checkpoints load as data; a password is masked whatever
characters it holds. What each test stands for is listed in docs/security.md."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "SECRETpw"


def cli(cwd: Path, *args: str, env: dict[str, str | None] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; `env` adds to (or, with None values, removes from) this process's environment."""
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd, capture_output=True, text=True, env=full, timeout=timeout)


def files_holding(folder: Path, secret: str) -> list[Path]:
    """Every file under `folder` whose bytes contain the secret."""
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


# --- a local search's Ray cluster ---


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Ray's GCS and raylet are the driver's children, its workers the raylet's)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def listening(pids: list[int]) -> set[tuple[str, int]]:
    """The TCP addresses these processes listen on, from /proc (the kernel's own tables: no tool to trust)."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                hex_ip, port = cols[1].split(":")
                raw = bytes.fromhex(hex_ip)  # 32-bit words in the host's (little-endian) order
                ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
                found.add((str(getattr(ip, "ipv4_mapped", None) or ip), int(port, 16)))
    return found


HOLDER = """
import json, os, sys
import ray
import nas.engine.ray_cluster

nas.engine.ray_cluster.init_ray(None, num_cpus=1)  # as search, confirm, ablation and fidelity start their local Ray


@ray.remote
def worker_env():
    return dict(os.environ)


print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "pid": os.getpid(), "worker_env": ray.get(worker_env.remote()),
                  "driver_env": dict(os.environ), "agent_port": ray.nodes()[0].get("RuntimeEnvAgentPort")}), flush=True)
sys.stdin.read()  # holds the cluster until the test closes stdin
"""


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray cluster started by nas.engine.ray_cluster.init_ray in another process, as a search starts it, with the storage's
    password in $CONVSPACE_STORAGE and $PGPASSWORD and a HOME of its own; held for this module's tests."""
    base = Path(tempfile.mkdtemp(prefix="cs-"))  # short: Ray's unix sockets must fit in 107 characters
    home = base / "home"
    home.mkdir()
    env = {**os.environ, "TMPDIR": str(base), "HOME": str(home), "PYTHONPATH": str(ROOT), "PGPASSWORD": SECRET,
           "CONVSPACE_STORAGE": f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/db", "RAY_AUTH_MODE": "disabled"}  # asked for: refused
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=base, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        assert line, holder.stderr.read()[-3000:]
        seen = json.loads(line)
        seen.update(base=base, home=home, pids=descendants(seen["pid"]))
        yield seen
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_local_ray_listens_on_loopback_only(local_ray):
    addresses = listening(local_ray["pids"])
    gcs_port = int(local_ray["gcs"].rpartition(":")[2])
    assert {port for _, port in addresses} >= {gcs_port, local_ray["agent_port"]}, addresses
    assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in addresses), addresses
    assert local_ray["gcs"].startswith("127.0.0.1:")


PROBE = """
import sys, urllib.request, urllib.error
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError

try:
    GcsClient(address=sys.argv[1]).internal_kv_get(b"probe", None, timeout=5)
    print("gcs: admitted")
except AuthenticationError:
    print("gcs: refused")
try:
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sys.argv[2]}/get_or_create_runtime_env", data=b""), timeout=5)
    print("agent: admitted")
except urllib.error.HTTPError as exc:
    print(f"agent: {exc.code}")
"""


def probe(local_ray, token: str | None) -> list[str]:
    """A Ray client in another process (another user would be one too: loopback is open to every local user), with no
    token of its own (a HOME without ~/.ray/auth_token) or with `token`: what the GCS and the runtime-env agent say."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(local_ray["base"]), **({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {}))
    run = subprocess.run([sys.executable, "-c", PROBE, local_ray["gcs"], str(local_ray["agent_port"])], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.split("\n")[:2]


def test_a_ray_client_without_the_launch_token_is_refused(local_ray):
    assert probe(local_ray, None) == ["gcs: refused", "agent: 401"]
    assert probe(local_ray, "0" * 64) == ["gcs: refused", "agent: 401"]
    # the token lives in the environment of the cluster's processes (which only their user can read, as /proc shows)
    environs = [Path(f"/proc/{pid}/environ").read_bytes() for pid in local_ray["pids"][1:]]
    token = next(e for e in environs if b"RAY_AUTH_TOKEN=" in e).split(b"RAY_AUTH_TOKEN=")[1].split(b"\0")[0].decode()
    assert len(token) == 64 and probe(local_ray, token)[0] == "gcs: admitted"  # the refusals above are the token's doing
    # ... and in no file: not ~/.ray/auth_token (Ray writes it with the umask's mode), not Ray's session folder
    assert not (local_ray["home"] / ".ray").exists() and files_holding(local_ray["base"], token) == []


def test_local_ray_keeps_its_files_where_no_other_user_can_enter(local_ray):
    import stat

    private = local_ray["base"] / f"convspace-{os.getuid()}"  # $TMPDIR/convspace-<uid>, not $TMPDIR/ray (mode 0777)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and any(private.glob("ray/session_*/sockets/raylet"))
    assert not (local_ray["base"] / "ray").exists()


def test_a_ray_folder_others_could_enter_is_refused(tmp_path, monkeypatch):
    from nas.engine.ray_cluster import private_ray_folder
    from space.errors import ConvspaceError

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    made = private_ray_folder()
    assert made == tmp_path / f"convspace-{os.getuid()}" and made.stat().st_mode & 0o777 == 0o700
    made.chmod(0o755)
    with pytest.raises(ConvspaceError, match="no one else can enter"):
        private_ray_folder()
    made.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    made.symlink_to(elsewhere)  # planted by someone who can write $TMPDIR: a link is never followed
    with pytest.raises(ConvspaceError, match="no one else can enter"):
        private_ray_folder()


def test_ray_processes_do_not_inherit_the_storage_password(local_ray):
    worker = local_ray["worker_env"]
    assert "PGPASSWORD" not in worker and "CONVSPACE_STORAGE" not in worker and not any(SECRET in v for v in worker.values())
    for pid in local_ray["pids"][1:]:  # the GCS, the raylet, its agents and workers
        try:
            assert SECRET.encode() not in Path(f"/proc/{pid}/environ").read_bytes(), pid
        except (FileNotFoundError, ProcessLookupError):
            continue
    driver = local_ray["driver_env"]  # the driver itself opens the study: it keeps them
    assert driver["PGPASSWORD"] == SECRET and SECRET in driver["CONVSPACE_STORAGE"] and driver["RAY_AUTH_MODE"] == "token"


# --- passwords with @ : / % in them ---

# Each password's distinctive pieces (3+ characters between its special characters) must never show.
PASSWORDS = ["p@ssWrongPW9", "Qx7:Lm2", "Rt5/Yu8", "Gh4%40Jk6", "Vb3%Nm1", "Ws2@Ed4:Rf5/Tg6%Yh7", "Pq8 Zx5"]


def pieces(password: str) -> list[str]:
    import re
    from urllib.parse import unquote

    return [p for p in re.split(r"[@:/% ]|%[0-9A-F]{2}", f"{password} {unquote(password)}") if len(p) >= 3]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_is_masked_whatever_characters_it_holds(password):
    from nas.engine.storage import ambiguous_password, display_url, has_password, hide_password, mask_passwords

    url = f"postgresql+psycopg2://u:{password}@127.0.0.1:1/db"
    assert display_url(url) == "postgresql+psycopg2://u:***@127.0.0.1:1/db" and has_password(url)
    assert ambiguous_password(url) == ("@" in password)
    if " " not in password:  # a text's URLs end at white space (a URL the command knows is masked whole, below)
        assert mask_passwords(f"cli.py pareto --storage {url} --study s") == "cli.py pareto --storage postgresql+psycopg2://u:***@127.0.0.1:1/db --study s"
    # a driver's message: the password masked where it stands whole, in a URL or alone; nothing else of the text touched
    message = f"(psycopg2.OperationalError) connection to {url} refused; password {password} rejected; ppp Qx7 Gh4 100%"
    hidden = hide_password(message, url)
    assert hidden == ("(psycopg2.OperationalError) connection to postgresql+psycopg2://u:***@127.0.0.1:1/db refused; password *** "
                      "rejected; ppp Qx7 Gh4 100%"), hidden
    assert not any(piece in hidden.replace("ppp Qx7 Gh4 100%", "") for piece in pieces(password)), hidden


def test_a_short_password_masks_only_itself():
    from nas.engine.storage import hide_password

    # the bug this replaces masked every `p` of the message for the password `p`
    assert hide_password("(psycopg2.OperationalError) password p for user postgres", "postgresql://u:p@h/db") == \
        "(psycopg2.OperationalError) password *** for user postgres"


@pytest.mark.parametrize("password", ["p@ssWrongPW9", "Ws2:Ed4/Rf5%Tg6", "Gh4%40Jk6"])
def test_a_command_never_shows_any_piece_of_such_a_password(tmp_path, password):
    run = cli(tmp_path, "pareto", "--storage", f"postgresql+psycopg2://u:{password}@127.0.0.1:1/db")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stderr.startswith("error: storage: ") and "'postgresql+psycopg2://u:***@127.0.0.1:1/db'" in run.stderr
    assert not any(piece in run.stdout + run.stderr for piece in pieces(password)), run.stderr
    if "@" in password:  # refused before any driver sees it: libpq would have asked a resolver for "ssWrongPW9@127.0.0.1"
        assert "unencoded '@'" in run.stderr and "%40" in run.stderr
    else:
        assert "psycopg2" in run.stderr and "Connection refused" in run.stderr  # the driver's own words, untouched
    assert not (tmp_path / "studies").exists()


# --- the dashboard: its launch token and its own Host ---


@pytest.fixture
def gated(tmp_path):
    """optuna-dashboard's own WSGI app over a real study, behind the gate `serve_dashboard` puts in front of it."""
    from optuna_dashboard import wsgi

    from nas.engine.storage import open_storage
    from nas.front.dashboard_gate import AllowedHosts, TokenGate
    from nas.front.dashboard_view import TrainedTrialsView
    from tests.conftest import write_study

    write_study(tmp_path, "s")
    url = f"sqlite:///{tmp_path}/studies/s.db"
    return TokenGate(wsgi(TrainedTrialsView(open_storage(url))), "T0KEN-of-this-launch", AllowedHosts("127.0.0.1"), "convspace-dashboard-8080"), url


def request(app, path: str, method: str = "GET", host: str = "127.0.0.1:8080", **headers: str) -> tuple[str, dict[str, str], bytes]:
    """One request through the WSGI app: its status, headers and body."""
    import io
    from wsgiref.util import setup_testing_defaults

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path.split("?")[0], "QUERY_STRING": path.partition("?")[2], "HTTP_HOST": host,
               "HTTP_ACCEPT_ENCODING": "gzip", **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = io.StringIO()
    answer = []
    body = b"".join(app(environ, lambda status, hdrs, exc=None: answer.append((status, dict(hdrs)))))
    return answer[0][0], answer[0][1], body


def test_the_dashboard_refuses_requests_without_its_token(gated):
    import optuna

    app, url = gated
    for headers in ({}, {"cookie": "convspace-dashboard-8080=wrong"}, {"authorization": "Bearer wrong"},
                    {"cookie": "convspace-dashboard-8081=T0KEN-of-this-launch"}):  # another port's dashboard's cookie
        status, _, body = request(app, "/api/studies", **headers)
        assert status.startswith("403") and b"study" not in body, (headers, body)
    assert request(app, "/api/studies?token=wrong")[0].startswith("403")
    assert request(app, "/dashboard/studies/1")[0].startswith("403")
    # what `nobody` did to the study before (issue 21): refused, and the study is still there
    assert request(app, "/api/studies/1", method="DELETE")[0].startswith("403")
    assert optuna.load_study(study_name="s", storage=url).trials


def test_the_url_token_becomes_a_cookie_that_the_dashboards_own_calls_carry(gated):
    app, _ = gated
    status, headers, _ = request(app, "/dashboard/studies/1?token=T0KEN-of-this-launch&x=1")
    assert status.startswith("302") and headers["Location"] == "/dashboard/studies/1?x=1"  # the token leaves the address bar
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("convspace-dashboard-8080=T0KEN-of-this-launch;") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    status, _, body = request(app, "/api/studies", cookie=cookie.split(";")[0])
    assert status.startswith("200") and json.loads(body)["study_summaries"][0]["study_name"] == "s"
    assert request(app, "/api/studies", authorization="Bearer T0KEN-of-this-launch")[0].startswith("200")  # for scripts


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "127.0.0.1.nip.io:8080", "192.0.2.1:8080", ""])
def test_the_dashboard_refuses_another_host_even_with_the_token(gated, host):
    """DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1 sends Host: attacker.example."""
    import optuna

    app, url = gated
    for headers in ({"authorization": "Bearer T0KEN-of-this-launch"}, {}):
        status, _, body = request(app, "/api/studies/1", method="DELETE", host=host, **headers)
        assert status.startswith("403") and b"Host" in body
    assert request(app, "/dashboard/studies/1?token=T0KEN-of-this-launch", host=host)[0].startswith("403")
    assert optuna.load_study(study_name="s", storage=url).trials


def test_the_hosts_a_dashboard_answers_to():
    import socket

    from nas.front.dashboard_gate import AllowedHosts

    loopback = AllowedHosts("127.0.0.1")
    for name in ("127.0.0.1", "localhost", "::1"):  # and any port: an SSH tunnel may forward another one
        assert name in loopback
    for name in ("attacker.example", "127.0.0.2", socket.gethostname().lower(), "0.0.0.0", ""):
        assert name not in loopback, name
    everywhere = AllowedHosts("0.0.0.0")  # --allow-remote: this machine's names and addresses, never a name that resolves here
    for name in ("localhost", "127.0.0.1", socket.gethostname().lower()):
        assert name in everywhere, name
    assert "attacker.example" not in everywhere and "203.0.113.5" not in everywhere  # TEST-NET-3: no machine's address
    assert AllowedHosts("[::1]").names >= {"::1", "localhost"}


def test_the_served_dashboard_wants_its_token_and_its_host(tmp_path):
    """The real server of `cli.py dashboard`: what a local user without the URL, or a rebinding web page, gets."""
    import urllib.error
    import urllib.request

    import optuna

    from tests.conftest import write_study

    write_study(tmp_path, "s")
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "dashboard", "--study", "s", "--port", "0"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        assert "?token=" in first, first + server.stderr.read()
        url = first[first.index("http://"):].split()[0]
        base, token = url.split("/dashboard/")[0], url.partition("?token=")[2]

        def status(path: str, method: str = "GET", **headers: str) -> int:
            try:
                return urllib.request.urlopen(urllib.request.Request(base + path, method=method, headers=headers), timeout=10).status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status("/api/studies") == 403 and status("/api/studies/1", "DELETE") == 403
        assert status("/api/studies/1", "DELETE", Host="attacker.example", Authorization=f"Bearer {token}") == 403
        assert status("/api/studies", Authorization=f"Bearer {token}") == 200
        assert status("/api/studies", Host="localhost:9000", Authorization=f"Bearer {token}") == 200  # through a tunnel's port
        assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/studies/s.db").trials
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert (first + out + err).count(token) == 1  # printed once, in the URL


# --- exports are data ---

HOSTILE_STUDY = 'x""";__import__("os").system("touch marker");"""'
PLANT = 'import pathlib; pathlib.Path({!r}).touch()\n'


@pytest.mark.parametrize("name, why", [
    ("class", "is a Python keyword"), ("match", "is a Python keyword"), ("print", "is a Python builtin"),
    ("os", "module of Python's standard library"), ("a" * 65, "at most 64 characters"), ("x" * 302, "at most 64 characters"),
    ("Bad-Name", "lowercase Python identifier"), ('x""";import os;"""', "lowercase Python identifier"), ("../up", "lowercase Python identifier"),
    ("é", "lowercase Python identifier"), ("resnet50", "already a timm model"), ("convspace_resnet50", "is the preset"),
])
def test_a_bad_export_name_is_one_line_and_writes_nothing(tmp_path, name, why):
    from tests.conftest import write_study

    write_study(tmp_path, "s")
    run = cli(tmp_path, "export", "--study", "s", "--best", "--name", name, "--out", "zoo")
    assert run.returncode == 2 and run.stderr.startswith("error: name: ") and why in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and len(run.stderr) < 400 and "Traceback" not in run.stderr
    assert not (tmp_path / "zoo").exists()


def test_a_hostile_study_name_runs_nothing_on_export_or_import(tmp_path):
    from tests.conftest import write_study

    study = write_study(tmp_path, HOSTILE_STUDY)  # as another user could name a study in a shared database
    refused = cli(tmp_path, "export", "--study", HOSTILE_STUDY, "--best", "--out", "zoo")  # the command line takes no such name
    assert refused.returncode == 2 and refused.stderr.startswith("error: study: ") and not (tmp_path / "zoo").exists()
    from nas.export.zoo import export, pick_trial  # ... the API does: what it writes must stay data

    export(study, pick_trial(study, None), None, tmp_path / "zoo")
    [module] = (tmp_path / "zoo").glob("*.py")
    assert module.stem == "x______import____os___system__touch_marker_______trial0"  # the default name: an identifier
    import yaml

    from nas.export.zoo import MODULE_TEMPLATE

    assert module.read_text() == MODULE_TEMPLATE.format(name=module.stem)  # the study's name is the YAML's business, as data

    assert yaml.safe_load(module.with_suffix(".yaml").read_text())["study"] == HOSTILE_STUDY
    # imported through the zoo, and the module imported directly: the entry works, the study's name never runs
    code = (f"import runpy, timm, nas.export.zoo; m = timm.create_model({module.stem!r}); runpy.run_path({str(module)!r}); "
            f"print(type(m).__name__, timm.models.model_entrypoint({module.stem!r}).__module__)")
    imported = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "CONVSPACE_ZOO": str(tmp_path / "zoo")})
    assert imported.returncode == 0 and imported.stdout.split() == ["ConvSpaceNet", f"convspace_zoo_{module.stem}"], imported.stderr[-2000:]
    assert not (tmp_path / "marker").exists()


def test_a_hostile_zoo_folder_runs_nothing(tmp_path):
    """A folder that `import nas.export.zoo` reads (studies/exports of wherever the user stands): a module beside a valid
    entry, modules alone, a YAML with a Python tag, an entry that would replace timm's resnet50, a misnamed one."""
    from nas.export.zoo import write_entry
    from tests.conftest import tiny_config

    zoo = tmp_path / "studies" / "exports"
    module = write_entry("planted", tiny_config(), zoo, {"study": "s", "trial": 0, "resolution": 32})
    module.write_text(PLANT.format("marker_planted"))  # what the module holds does not matter: it is never run
    (zoo / "lonely.py").write_text(PLANT.format("marker_lonely"))
    (zoo / "__init__.py").write_text(PLANT.format("marker_init"))
    (zoo / "tagged.yaml").write_text('!!python/object/apply:os.system ["touch marker_yaml"]\n')
    data = (zoo / "planted.yaml").read_text()
    (zoo / "resnet50.yaml").write_text(data.replace("name: planted", "name: resnet50"))
    (zoo / "misnamed.yaml").write_text(data)
    code = ("import json, timm, nas.export.zoo; e = timm.models.model_entrypoint; "
            "print(json.dumps([timm.create_model('planted').num_classes, e('planted').__module__, e('resnet50').__module__]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "CONVSPACE_ZOO": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == [10, "convspace_zoo_planted", "timm.models.resnet"]
    for skipped, why in (("tagged.yaml", "is not valid YAML"), ("resnet50.yaml", "already a timm model"), ("misnamed.yaml", "an entry's name is its file's")):
        assert f"skipped zoo entry studies/exports/{skipped}" in run.stderr and why in run.stderr, (skipped, run.stderr)
    # what `train --model <a broken entry's file name>` imports (the zoo, past the name check), and `inspect` of an entry:
    # nothing runs either
    train = cli(tmp_path, "train", "--model", "tagged", "--epochs", "1")
    assert train.returncode == 2 and train.stderr.strip().endswith("is not a registered model (export one, or see `presets`)")
    assert "skipped zoo entry studies/exports/tagged.yaml" in train.stderr
    assert cli(tmp_path, "inspect", "planted", "--json").returncode == 0
    assert sorted(p.name for p in tmp_path.rglob("marker*")) == []


OLD_MODULE = '''"""convspace model-factory entry {name!r}: study s, trial 0. Generated by `cli.py export`; the config is {name}.yaml."""

from pathlib import Path

from timm.models import register_model

from nas.zoo import create, load_entry

CONFIG, default_cfgs = load_entry(Path(__file__).with_suffix(".yaml"))


@register_model
def {name}(pretrained: bool = False, **kwargs):
    return create({name!r}, CONFIG, pretrained, **kwargs)
'''


def test_modules_generated_before_still_work_when_imported_directly(tmp_path, monkeypatch):
    """A module the previous `export` wrote (verbatim): `import nas.export.zoo` registers its entry from the YAML alone, and code
    that imports the module itself still gets a working entry."""
    import importlib

    import timm

    from nas.export.zoo import register_exports, write_entry
    from tests.conftest import tiny_config

    module = write_entry("older_net", tiny_config(), tmp_path, {"study": "s", "trial": 0, "resolution": 32})
    module.write_text(OLD_MODULE.format(name="older_net"))
    assert register_exports([tmp_path]) == ["older_net"] and timm.create_model("older_net").num_classes == 10
    monkeypatch.syspath_prepend(str(tmp_path))  # as code that imports the zoo folder's modules does
    monkeypatch.delitem(sys.modules, "older_net", raising=False)
    loaded = importlib.import_module("older_net")
    assert loaded.older_net(num_classes=3).num_classes == 3 and timm.create_model("older_net", num_classes=4).num_classes == 4


REGISTER_MODULE = '''"""A convspace model-factory entry, generated by `cli.py export` before nas/ had sub-packages."""

from pathlib import Path

from nas.zoo import register_file

{name} = register_file(Path(__file__).with_suffix(".yaml"), {name!r})
'''


def test_modules_written_against_nas_zoo_import_in_a_fresh_process(tmp_path):
    """An export written before the zoo moved to nas.export.zoo (`from nas.zoo import register_file`, verbatim) imports
    and builds in a fresh Python, and `import nas.zoo` still registers the zoo's entries and the presets with timm."""
    from nas.export.zoo import write_entry
    from tests.conftest import tiny_config

    module = write_entry("moved_net", tiny_config(), tmp_path, {"study": "s", "trial": 0, "resolution": 32})
    module.write_text(REGISTER_MODULE.format(name="moved_net"))
    code = ("import sys, timm; sys.path.insert(0, sys.argv[1]); import moved_net, nas.zoo; "
            "print(moved_net.moved_net(num_classes=3).num_classes, timm.models.is_model('convspace_resnet50'))")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["3", "True"], run.stdout + run.stderr


# --- checkpoints load as data ---


class Planted:
    """What a planted checkpoint holds: an object whose unpickling runs a command."""

    def __reduce__(self):
        return os.system, ("touch marker",)


@pytest.mark.parametrize("kind", ["code", "broken", "foreign"])
def test_train_resume_never_runs_a_planted_checkpoint(tmp_path, kind):
    import torch

    (tmp_path / "run").mkdir()
    planted = tmp_path / "run" / "last.pth"
    if kind == "code":
        torch.save({"model": {}, "settings": {"model": "convspace_resnet50"}, "epoch": 0, "extra": Planted()}, planted)
    elif kind == "broken":
        planted.write_bytes(b"PK\x03\x04 not a checkpoint")
    else:
        torch.save([torch.zeros(1)], planted)  # plain data, but not a checkpoint of ours
    run = cli(tmp_path, "train", "--model", "convspace_resnet50", "--resume", "--output", "run", "--epochs", "1")
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr[-2000:]
    message = {"code": "holds more than weights and plain data (Trying to load unsupported GLOBAL posix.system",
               "broken": "is not a readable checkpoint", "foreign": "is not a checkpoint written by `train`"}[kind]
    assert run.stderr.startswith(f"error: resume: run/last.pth {message}"), run.stderr
    assert not (tmp_path / "marker").exists()
