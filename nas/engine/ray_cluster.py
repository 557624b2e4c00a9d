"""Ray for the proxy trainings: a local cluster only this driver can use, or a cluster joined with Ray's own
authentication, and Ray's noise about dead workers kept out of the progress lines.

Why a module of its own: starting Ray safely (a token per launch, loopback listeners, no secrets in the workers'
environment, a private folder for its sockets and logs, only our packages shipped to a cluster) is a job apart from
what Tune trains (nas.engine.tune), and is read and tested as the search's security boundary towards Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray._private import utils as ray_utils

from nas.engine.storage import STORAGE_ENV, mask_passwords
from space.errors import ConvspaceError


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Start Ray locally (all CPUs of this machine, or `num_cpus`) or join a cluster, quietly.

    A local cluster (no address, or "local") is this driver's alone: it listens on loopback only, admits no client
    without a token made for this launch, and its processes do not inherit the storage's password (see _start_local)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trials run in the driver's working folder, not Tune's per-trial one, so that a relative --data path still
    # points at the data (the local workers inherit this from the driver).
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # A trial the time limit stops before its first epoch ends reports no accuracy (there is none); Tune would
    # abort the whole run on a result without the scheduler's metric, while ASHA itself just skips such a result.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # A trial whose worker died is one line of ours (the bridge's or the RunQueue's `requeued`), Ray's report stays in
    # the trial's folder: not Tune's traceback of it, nor its closing "Trials did not complete" (that trial is retried).
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    logging.getLogger("ray.tune.tune").addFilter(_NotTrialsIncomplete())
    _quiet_worker_deaths()
    if ray.is_initialized():
        return
    # Ray keeps the driver's command line as the job's entrypoint (`ray list jobs`, the cluster's dashboard): a
    # --storage URL there would carry its password, so Ray is given the line with passwords masked.
    entrypoint = getattr(ray_utils, "get_entrypoint_name", None)
    if entrypoint is not None:
        ray_utils.get_entrypoint_name = lambda: mask_passwords(entrypoint())
    options: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address in (None, "local"):
            # with "local", as the tests do: our packages shipped as to a cluster, on a local cluster of our own
            _start_local(num_cpus or os.cpu_count(), runtime_env=_cluster_runtime_env() if address else None, **options)
        else:
            _join(address, **options)
    finally:
        if entrypoint is not None:
            ray_utils.get_entrypoint_name = entrypoint


class _NotTrialsIncomplete(logging.Filter):
    """Drops Tune's closing "Trials did not complete: [...]": the trials it names were retried or told as failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Trials did not complete")

    def __eq__(self, other: object) -> bool:  # one filter however often Ray is started in a process
        return isinstance(other, _NotTrialsIncomplete)

    def __hash__(self) -> int:
        return hash(_NotTrialsIncomplete)


def _quiet_worker_deaths() -> None:
    """The driver prints every worker death the raylet reports (one long line of advice among the progress lines):
    the trial's own line tells it, and Ray's logs keep it. Other raylet messages are printed as before."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "convspace", False):
        return

    def filtered(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if data.get("pid") == "raylet" and any("worker died or was killed" in str(line) for line in data.get("lines", [])):
            return
        printer(data, *args, **kwargs)

    filtered.convspace = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = filtered


# What the processes of a local cluster must not inherit from the driver's environment: the storage URL, libpq's
# password, and any other variable holding a URL with a password. Trials only train; the driver alone opens the study.
SECRET_ENV = (STORAGE_ENV, "PGPASSWORD")


def _start_local(num_cpus: int | None, **options: Any) -> None:
    """Start a local Ray cluster that only this driver can use.

    - Token authentication on (Ray's default for a new local cluster; never switched off here, whatever
      $RAY_AUTH_MODE says), with a fresh random token for this launch, held in this process's environment (which Ray's
      processes inherit) and written to no file: ~/.ray/auth_token, which Ray would write otherwise, is created with
      the umask's mode (often readable by every user of the machine) and outlives the run.
    - Every listener on loopback: Ray binds its servers to the node's IP, and on Linux resolves a loopback
      `_node_ip_address` to the machine's address; with `ENABLE_RAY_CLUSTER` off (as Ray runs on macOS and Windows)
      the node's IP is 127.0.0.1, so the GCS, raylet, workers and agents listen there only.
    - The secrets of SECRET_ENV are out of the environment while Ray starts its processes (its workers are the
      raylet's children and get the raylet's environment); the driver gets them back at once.
    - Its files (session logs, unix sockets) in a folder only this user can enter: Ray makes its session folders
      writable by everyone (mode 0777) under $TMPDIR/ray, where another user could read the logs or swap a socket.
    """
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    Config.initialize("")  # Ray caches the mode and token in this process (read at import): make it read them again
    AuthenticationTokenLoader.instance().reset_cache()
    hidden = {k: v for k, v in os.environ.items() if k in SECRET_ENV or mask_passwords(v) != v}
    cluster = ray_constants.ENABLE_RAY_CLUSTER
    for name in hidden:
        del os.environ[name]
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        # "local": without it Ray joins the last `ray start` cluster of this machine, if any
        ray.init(address="local", num_cpus=num_cpus, _temp_dir=str(private_ray_folder() / "ray"), **options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster
        os.environ.update(hidden)
    _watch_agents()


def _watch_agents() -> None:
    """Start nas/engine/ray_watchdog.py on this cluster's raylet, so that a driver killed with SIGKILL leaves no Ray
    process behind within seconds: measured (search, 2-core box), the agents go 0.4-0.7 s after the kill and the trials'
    workers by themselves at 2.1-2.9 s; before, the raylet's two agents stayed 61-70 s (Ray's fixed 60 s timeout on
    reporting the raylet's death to the dead GCS). Why a watchdog and not a Ray setting: see that file. Only for a local
    cluster of ours (a joined cluster's processes are not ours to end); Linux only (there the kernel ends Ray's other
    head processes with the driver; elsewhere Ray starts its own reaper)."""
    import subprocess

    from ray._private import ray_constants

    from nas.engine import ray_watchdog

    if not sys.platform.startswith("linux"):
        return
    _watchdogs[:] = [w for w in _watchdogs if w.poll() is None]  # reaps those whose cluster was shut down
    raylet = ray._private.worker._global_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    # -I -S and an empty environment: no site packages to import, no token or password inherited; a session of its
    # own, so that a kill of the driver's process group does not take it along
    _watchdogs.append(subprocess.Popen([sys.executable, "-I", "-S", ray_watchdog.__file__, *ray_watchdog.command(raylet)],
                                       env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True))


# the watchdogs this process started (held, so that each is reaped once it ends: see _watch_agents)
_watchdogs: list[Any] = []


def private_ray_folder() -> Path:
    """$TMPDIR/convspace-<uid> (where Ray would make $TMPDIR/ray), mode 0700, made if missing: a local cluster keeps its files in its `ray` folder (which
    Ray makes writable by everyone, as it does $TMPDIR/ray: this folder keeps the others out). One that is not this
    user's own private folder (another user made it first, or it is a link) is refused: it would hand them Ray's
    sockets and logs."""
    import stat

    from ray._common.utils import get_default_system_temp_dir  # where Ray itself would go: $RAY_TMPDIR, $TMPDIR, /tmp

    folder = Path(get_default_system_temp_dir()) / f"convspace-{os.getuid()}"  # short: Ray's socket paths must fit in 107 characters
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConvspaceError(f"ray: {folder} must be a folder of this user's that no one else can enter (mode 0700), where a local "
                             "Ray keeps its sockets and logs; remove it, or set TMPDIR to a folder of your own")
    return folder


def _join(address: str, **options: Any) -> None:
    """Join the Ray cluster at `address` with Ray's own authentication: a cluster started with RAY_AUTH_MODE=token
    admits a driver that has the same mode and the cluster's token ($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token); one that refuses this driver is a one-line error before Ray's minutes of retries."""
    if address != "auto" and not address.startswith("ray://"):  # a GCS address: ask it once, quietly
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError

        try:
            with _quiet_stderr():  # Ray's C++ client logs every refusal on the process's stderr
                GcsClient(address=address).internal_kv_get(b"convspace-probe", None, timeout=10)
        except AuthenticationError:
            raise ConvspaceError(f"address: the Ray cluster at {address} refused this driver's token (RAY_AUTH_MODE is "
                                 f"{os.environ.get('RAY_AUTH_MODE') or 'unset'} here): a cluster started with RAY_AUTH_MODE=token "
                                 "admits a driver with RAY_AUTH_MODE=token and the cluster's token ($RAY_AUTH_TOKEN, or the file "
                                 "~/.ray/auth_token or $RAY_AUTH_TOKEN_PATH)") from None
        except Exception:  # anything else (a GCS that is still starting): ray.init reports it as it does
            pass
    ray.init(address=address, runtime_env=_cluster_runtime_env(), **options)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null while the block runs (Ray's C++ code writes there directly)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# What a cluster's workers import (the trainable is nas.engine.tune.proxy_trainable). Only these travel: not the rest of the
# checkout, where a data/ folder, large files, a .env or credentials may lie (and Ray refuses a package over 512 MiB).
WORKER_PACKAGES = ("space", "trainers", "nas")


def _cluster_runtime_env(root: Path | None = None) -> dict[str, Any]:
    """Ship our packages, and nothing else of the project, to the cluster's workers (they may lack our checkout)."""
    root = root or Path(__file__).resolve().parents[2]
    return {"py_modules": [str(root / name) for name in WORKER_PACKAGES], "excludes": ["__pycache__", "*.pyc"]}
