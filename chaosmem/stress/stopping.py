"""Find a stressor's processes by its id and end them: the undo of a ``stressor`` ledger entry.

A pid alone is not an identity: after a crash and a reboot, or simply a long time, the pid in a
status file may belong to someone else. A process counts as our stressor only when its
``/proc/PID/cmdline`` is the engine's and carries ``--id <id>`` (a random hex id), so a recycled
pid is never signalled. Candidates come from the status file and from the cgroup's process list
(which also catches an engine that died before its first status).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path

from chaosmem.ledger import Entry, Ledger, register_undo
from chaosmem.lifecycle import alive, end_processes
from chaosmem.stress.status import read_status, update_status
from chaosmem.stress.supervisor import live_supervisor

__all__ = ["STRESSOR_KIND", "find_engines", "is_stressor", "stop_entry", "stop_processes"]

STRESSOR_KIND = "stressor"
_ENGINE_MARKS = ("chaosmem/stress/engine.py", "chaosmem.stress.engine")


def _is_engine_of(stressor_id: str) -> Callable[[list[str]], bool]:
    def identity(argv: list[str]) -> bool:
        return any(arg.endswith(_ENGINE_MARKS) for arg in argv) and any(
            arg == "--id" and value == stressor_id for arg, value in itertools.pairwise(argv)
        )

    return identity


def is_stressor(pid: int, stressor_id: str) -> bool:
    """Whether ``pid`` is, right now, the engine of stressor ``stressor_id`` (zombies are not)."""
    return alive(pid, identity=_is_engine_of(stressor_id))


def find_engines(stressor_id: str, *, cgroup: Path | None, status: Path | None) -> list[int]:
    """The live engine processes of ``stressor_id``."""
    candidates: list[int] = []
    if status is not None:
        pid = (read_status(status) or {}).get("pid")
        if isinstance(pid, int):
            candidates.append(pid)
    if cgroup is not None:
        with contextlib.suppress(OSError):
            candidates += [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    return sorted({pid for pid in candidates if is_stressor(pid, stressor_id)})


def stop_processes(stressor_id: str, pids: list[int], *, grace: float) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace``; returns once none of them is our stressor any more."""
    end_processes(lambda: [pid for pid in pids if is_stressor(pid, stressor_id)], grace=grace)
    return pids


def stop_entry(entry: Entry, *, grace: float = 1.0) -> list[int]:
    """End the stressor of ``entry``: through its supervisor when it runs in this process (so it
    does not respawn), and by id in any case (another process may have started it)."""
    stressor_id = str(entry.undo["id"])
    status = Path(entry.undo["status"]) if entry.undo.get("status") else None
    cgroup = Path(entry.undo["cgroup"]) if entry.undo.get("cgroup") else None
    ended: list[int] = []
    supervisor = live_supervisor(stressor_id)
    if supervisor is not None:
        ended += supervisor.stop(grace=grace)
    ended += [
        p
        for p in stop_processes(
            stressor_id, find_engines(stressor_id, cgroup=cgroup, status=status), grace=grace
        )
        if p not in ended
    ]
    if status is not None and supervisor is None:
        _settle_status(status, stopped=bool(ended))
    return ended


def _settle_status(status: Path, *, stopped: bool) -> None:
    """No engine of this stressor runs any more: its status must not say it holds memory.

    An engine that died with its run (SIGKILL, PR_SET_PDEATHSIG) could not write its last
    status, and a later run's timeline would count the bytes it left there.
    """
    last = read_status(status)
    if last is None or (last.get("bytes") == 0 and last.get("phase") in ("done", "killed")):
        return
    update_status(status, phase="done", reason="stopped" if stopped else "gone", bytes=0)


@register_undo(STRESSOR_KIND)
def _undo_stressor(entry: Entry) -> str:
    ended = stop_entry(entry)
    if not ended:
        return f"stressor {entry.undo['id']}: no longer running"
    return f"stressor {entry.undo['id']}: stopped pids {ended}"


def open_stressors(ledger: Ledger, *, run: str | None) -> list[Entry]:
    return ledger.read().open(run=run, kind=STRESSOR_KIND)
