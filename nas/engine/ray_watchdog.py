"""Ends the raylet's agents as soon as the raylet of a local Ray cluster is gone: `python ray_watchdog.py PID:START...`,
the raylet's first, then its children's (see command()).

Why by hand: when the driver dies without shutting Ray down (kill -9, the OOM killer), the kernel ends the GCS and the
raylet with it (Ray starts them with PR_SET_PDEATHSIG), but not the raylet's children ray::DashboardAgent and
ray::RuntimeEnvAgent. Those see the raylet go at once (their stdin pipe closes), then report its death to the dead GCS
with a timeout Ray fixes at 60 s (ray._private.utils.publish_error_to_driver) before they exit: two orphans of about
80 MB each for 61-70 s after the kill (measured with Ray 2.60 on the 2-core box). No Ray setting shortens that call
(RAY_gcs_rpc_server_reconnect_timeout_s=3 bounds the driver's own GCS client, not this one: measured, still 60 s), and
Ray's reaper process (used only where the kernel cannot share fate) would make the driver a process-group leader, out
of the terminal's foreground group, where Ctrl-C no longer reaches it.

Started by nas.engine.ray_cluster right after a local cluster is up (never for a cluster joined by address), in a
session of its own (a kill of the driver's process group does not take it along), with an empty environment (it
needs no token or password). The driver notes the raylet's children for it (the agents, which the raylet starts
with itself: measured, both there when ray.init returns; and any worker started by then) with their start times, so that
a pid the kernel reuses later is never signalled. It waits for the raylet to be gone: at the driver's death, or at
Ray's normal shutdown (where the raylet has ended its children itself, and this finds nothing left to end). Workers
started later leave with the raylet by themselves (measured: 2-3 s after the kill). Standard library only, to start in
milliseconds; Linux only (it reads /proc).
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 0.5  # how often the raylet is looked at: the agents outlive it by at most this


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None if it is gone or a
    zombie (a killed raylet stays one until init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and ')'
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def children(pid: int) -> dict[int, str]:
    """The living children of `pid`, each with its start time."""
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found[int(name)] = fields[19]
    return found


def end(processes: dict[int, str]) -> None:
    """SIGKILL each process that is still the one noted. Not SIGTERM first: an agent stuck in its report to the dead
    GCS does not act on it (measured: with SIGTERM first, both agents stayed until the SIGKILL one second later), and
    an orphaned agent has nothing to save. The kernel ends the GCS and the raylet the same way."""
    for pid, born in processes.items():
        if start_time(pid) == born:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # gone in between
                pass


def main(raylet: tuple[int, str], noted: dict[int, str]) -> None:
    """Wait for the raylet (pid, start time) to be gone, then end the children `noted` (pid -> start time). Noted by
    the driver, not here: a kill that comes before this process has even started (its Python takes a while on a loaded
    box; seen in the test) still ends them, and a pid reused by then is never taken for the raylet."""
    while start_time(raylet[0]) == raylet[1]:
        time.sleep(POLL_S)
    end(noted)


def command(raylet: int) -> list[str]:
    """The arguments after `python ray_watchdog.py` for `raylet`: PID:START of the raylet, then of each of its children."""
    return [f"{pid}:{born}" for pid, born in {raylet: start_time(raylet), **children(raylet)}.items()]


if __name__ == "__main__":
    first, *rest = ((int(pid), born) for pid, _, born in (arg.partition(":") for arg in sys.argv[1:]))
    main(first, dict(rest))
