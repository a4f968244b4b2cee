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

* :class:`Children`: the ``Popen`` of every child that outlives the call that started it
  (services, background replay workers), kept until the child has ended and been reaped, even
  when someone else ended it (``chaosmem rollback``, its own deadline): a dropped ``Popen`` of
  a child never waited for is a ResourceWarning and a zombie until the next ``Popen``.

* :func:`child_env`: the environment of a ``python -m chaosmem.…`` child (replay workers), in
  which it imports the same chaosmem as its parent.

(Files others read are replaced atomically by :func:`chaosmem.state.replace_private`.)

(The stress engine and the stopper shipped into pods over exec (:mod:`chaosmem.kube.stress`)
run without chaosmem's imports, so they keep their own few lines.)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import chaosmem
from chaosmem.errors import ChaosmemError

__all__ = ["Children", "ProcessesRemain", "alive", "child_env", "cmdline", "end_processes"]

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


class Children:
    """This process's long-lived children by key; each is reaped once it has ended.

    :meth:`reap_ended` runs on every :meth:`add` and at exit, so a child ended by someone else
    is reaped too; :meth:`forget` is for the one who ended it.
    """

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        atexit.register(self.reap_ended)

    def add(self, key: str, proc: subprocess.Popen[bytes]) -> None:
        self.reap_ended()
        self._procs[key] = proc

    def get(self, key: str) -> subprocess.Popen[bytes] | None:
        return self._procs.get(key)

    def forget(self, key: str, *, wait: float = 0.0) -> None:
        """Stop keeping ``key``'s child, reaping it if it ends within ``wait`` seconds (ended
        processes leave their cgroup a moment before they can be reaped)."""
        proc = self._procs.pop(key, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)

    def reap_ended(self) -> None:
        """Reap and forget every child that has ended."""
        for key, proc in list(self._procs.items()):
            if proc.poll() is not None:
                self._procs.pop(key, None)


def child_env() -> dict[str, str]:
    """This process's environment with chaosmem's own source tree first on ``PYTHONPATH``: a
    ``python -m chaosmem.…`` child imports the same chaosmem as its parent, installed or not."""
    env = dict(os.environ)
    source = str(Path(chaosmem.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    return env
