"""The heartbeats of a driver's live trials, as a `with` block: beating while it runs, stopped when it ends, however it ends.

Optuna fails a RUNNING trial whose heartbeat is older than the storage's grace period (another driver does it, through
`fail_stale_trials`) and nas.engine.storage.requeue_stale queues its network again: so a driver beats for every trial it has
handed to Ray Tune, each interval, on a thread of its own (a long epoch must not starve it). A thread started in a
constructor and stopped by a `close()` someone may forget outlives its search; a context manager cannot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from types import TracebackType

from optuna.storages import RDBStorage

from nas.engine.storage import storage_fault


class Heartbeat:
    """Beats each `storage` heartbeat interval for the trials `live()` names (by number), while the `with` block runs.

    A beat that fails (the storage gave up waiting, see nas.engine.storage.STORAGE_PATIENCE) never ends the thread: it is kept
    in `fault` and told to `on_fault` once, with one line of why; the next interval tries again. A storage without
    heartbeats (no --heartbeat-interval) starts no thread."""

    def __init__(self, storage: RDBStorage, study_id: int, live: Callable[[], Iterable[int]], *,
                 on_fault: Callable[[str], None] = lambda reason: None) -> None:
        self.storage, self.study_id, self.live, self.on_fault = storage, study_id, live, on_fault
        self.interval = storage.get_heartbeat_interval()
        self.fault: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, number: int) -> None:
        """One heartbeat for trial `number` now (a trial just asked beats at once, before its first interval)."""
        if self.interval:
            self.storage.record_heartbeat(self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for number in list(self.live()):
                    self.beat(number)
                self.fault = None
            except Exception as exc:  # noqa: BLE001 - a thread that raises dies silently; this one says why and goes on
                if self.fault is None:
                    self.on_fault(storage_fault(exc) or f"{type(exc).__name__}: {exc}")
                self.fault = exc

    def __enter__(self) -> Heartbeat:
        if self.interval and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True, name="convspace-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)  # a beat in flight may finish; one stuck on the storage is not waited for
            self._thread = None
