"""Opening a study's storage from several processes at once."""

from __future__ import annotations

import multiprocessing

from nas.engine.storage import open_storage
from space.errors import ConvspaceError


def _open(url: str) -> str:
    try:
        open_storage(url)
        return "ok"
    except ConvspaceError as exc:
        return str(exc)


def test_processes_opening_a_fresh_sqlite_file_at_once_all_succeed(tmp_path):
    # A reader (pareto, dashboard, a test polling the study) opening beside a starting driver lost the race to
    # create Optuna's tables ("table studies already exists", "UNIQUE constraint failed: alembic_version") and
    # the driver exited; every round below loses it at least once without the retry.
    with multiprocessing.get_context("fork").Pool(4) as pool:
        for round_ in range(5):
            url = f"sqlite:///{tmp_path}/fresh{round_}.db"
            assert pool.map(_open, [url] * 4) == ["ok"] * 4
