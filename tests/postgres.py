"""A throwaway PostgreSQL cluster for tests: initdb into a temp folder, start on a loopback port, stop after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and the server refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def find_initdb() -> str | None:
    """The server's initdb: on PATH, or where Debian installs it."""
    return shutil.which("initdb") or next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)


CLUSTERS: dict[str, list[str]] = {}  # a running server's URL -> pg_ctl's arguments that start it again (a test may stop it)


@contextmanager
def postgres_server(initdb: str, password: str | None = None) -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database; the cluster is removed afterwards.

    With `password`, TCP connections must give it (scram-sha-256) and the URL yielded holds none: the test adds it."""
    bin_dir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="convspace-pg-"))
    data = root / "data"
    os.chmod(root, 0o777)
    port = _free_port()
    auth = ["-A", "trust"]
    if password:
        (root / "pwfile").write_text(password + "\n")
        os.chmod(root / "pwfile", 0o644)
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'pwfile'}"]
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), *auth, "-U", "postgres"]), check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    pg_ctl(initdb, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", password=password)
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE convspace")
        connection.close()
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/convspace"
        CLUSTERS[url] = ["-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
        yield url
    finally:
        pg_ctl(initdb, "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


def pg_ctl(initdb: str, *args: str, check: bool = True) -> None:
    """Run the server's pg_ctl (as the postgres user when root)."""
    subprocess.run(_as_postgres([str(Path(initdb).parent / "pg_ctl"), *args]), check=check, capture_output=True)


def fresh_database(url: str, name: str) -> str:
    """A new empty database on the same server (no Optuna schema yet), as a SQLAlchemy URL."""
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    connection = psycopg2.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname="postgres")
    connection.autocommit = True
    connection.cursor().execute(f"CREATE DATABASE {name}")
    connection.close()
    return parsed.set(database=name).render_as_string(hide_password=False)
