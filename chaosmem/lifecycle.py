"""The end of what chaosmem starts: which process is still ours, and ending it.

One copy of two things every starter of processes needs (services, stressors, replay
workers), so they behave the same everywhere:

* :func:`cmdline` / :func:`alive`: a pid alone is no identity. After a crash, a reboot or just a
  long time, a pid in a file may belong to someone else; a process counts as ours only when its
  ``/proc/PID/cmdline`` says so (callers check what they put there: a module, an id, a path).
  A zombie has an empty cmdline and counts as ended.
* :func:`end_processes`: SIGTERM, then SIGKILL after a grace period, until none of the
  processes is ours any more; each round asks the caller again which pids are left, so a
  recycled pid is never signalled and a process forked meanwhile is not missed.

(Files others read are replaced atomically by :func:`chaosmem.state.replace_private`.)

(The stress engine and the stopper shipped into pods over exec (:mod:`chaosmem.kube.stress`)
run without chaosmem's imports, so they keep their own few lines.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from chaosmem.errors import ChaosmemError

__all__ = ["ProcessesRemain", "alive", "cmdline", "end_processes"]

#: How often :func:`end_processes` looks again (seconds).
POLL = 0.02


class ProcessesRemain(ChaosmemError):
    """Some processes were still there ``kill_wait`` seconds after SIGKILL (stuck in the kernel)."""


def cmdline(pid: int) -> list[str]:
    """The process's arguments, or ``[]`` when it is gone, a zombie or not readable."""
    try:
        raw = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def alive(pid: int, *, identity: Callable[[list[str]], bool]) -> bool:
    """Whether ``pid`` runs now and its arguments pass ``identity`` (zombies never do)."""
    argv = cmdline(pid)
    return bool(argv) and identity(argv)


def end_processes(
    live: Callable[[], Iterable[int]], *, grace: float, kill_wait: float = 10.0
) -> list[int]:
    """End the processes ``live()`` lists: SIGTERM now, SIGKILL after ``grace`` seconds.

    ``live`` is asked again every round and must list only processes that are still ours
    (see :func:`alive`); the call returns once it lists none. Each process gets one SIGTERM
    (one that handles it gracefully is not hurried by a second) and, if still there after
    ``grace``, one SIGKILL. Returns every pid signalled, in first-seen order. Raises
    :class:`ProcessesRemain` when some are left ``kill_wait`` seconds after the SIGKILL.
    """
    signalled: list[int] = []
    killed: set[int] = set()
    deadline = time.monotonic() + grace
    while True:
        pids = list(live())
        if not pids:
            return signalled
        now = time.monotonic()
        if now > deadline + kill_wait:
            raise ProcessesRemain(f"processes {pids} did not end after SIGKILL")
        for pid in pids:
            sig = None
            if pid not in signalled:
                signalled.append(pid)
                sig = signal.SIGTERM
            if now > deadline and pid not in killed:
                killed.add(pid)
                sig = signal.SIGKILL
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        time.sleep(POLL)
