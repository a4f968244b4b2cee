"""Start the engine inside a cgroup, watch it, and tell an OOM kill from a stop.

One :class:`Supervisor` owns one stressor (one ledger entry, one id) and the engine processes
that carry it: the first, and the respawns after each kernel OOM kill when ``respawn`` is asked.
Its daemon thread does the spawning and the waiting, which matters for three reasons:

* ``PR_SET_PDEATHSIG`` fires when the *thread* that forked exits. Chaos Toolkit runs background
  activities in pool threads that end long before the experiment; the supervisor thread lives
  exactly as long as its engine, so the signal means "the process is gone", nothing earlier.
* The engine also holds the read end of a pipe whose write end only this process has (it is
  close-on-exec): EOF tells it the starting process died, even if PDEATHSIG did not fire.
* A death by SIGKILL while the cgroup's ``oom_kill`` counter rose is the kernel's OOM kill: a
  result to report (and to respawn after), not a crash.

With ``detach`` the engine gets neither pipe nor PDEATHSIG and a session of its own: it outlives
this process and ends at its own deadline (or ``chaosmem rollback``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import Entry, Ledger
from chaosmem.lifecycle import end_processes
from chaosmem.state import open_private
from chaosmem.stress import engine
from chaosmem.stress.status import log_path, read_progress, read_status, update_status
from chaosmem.targets.cgroup import Cgroup

__all__ = ["ENGINE_PATH", "EngineSpec", "Supervisor", "live_supervisor"]

#: The engine runs by path with an isolated, site-less interpreter (see engine.py for why).
ENGINE_PATH = str(Path(engine.__file__).resolve())
_RESPAWN_PAUSE = 0.1
_OUTCOMES = {
    engine.EXIT_DONE: "done",
    engine.EXIT_STOPPED: "stopped",
    engine.EXIT_PARENT_GONE: "parent-gone",
    engine.EXIT_DEADLINE: "deadline",
}

_LIVE: dict[str, Supervisor] = {}
_LIVE_LOCK = threading.Lock()


def live_supervisor(stressor_id: str) -> Supervisor | None:
    """The supervisor of ``stressor_id`` when it runs in this process."""
    with _LIVE_LOCK:
        return _LIVE.get(stressor_id)


@dataclass(frozen=True)
class EngineSpec:
    """What one engine process is asked to do (bytes, bytes/s, seconds)."""

    size: int
    rate: float | None
    fragmentation: float
    hold: float | None
    release: str

    @property
    def ramp_seconds(self) -> float:
        return self.size / self.rate if self.rate else 0.0

    def argv(
        self,
        *,
        stressor_id: str,
        status: Path,
        parent_fd: int,
        deadline: float | None,
        meta: dict[str, Any],
    ) -> list[str]:
        """The engine's command line here: this interpreter, isolated, on the engine's file."""
        options = self.engine_options(
            stressor_id=stressor_id,
            status=status,
            parent_fd=parent_fd,
            deadline=deadline,
            meta=meta,
        )
        return [sys.executable, "-I", "-S", ENGINE_PATH, *options]

    def engine_options(
        self,
        *,
        stressor_id: str,
        status: str | PurePath,
        parent_fd: int,
        deadline: float | None,
        meta: dict[str, Any],
    ) -> list[str]:
        """The engine's options, wherever it runs (here, or in a pod: :mod:`chaosmem.kube.stress`)."""
        return [
            "--id", stressor_id,
            "--size", str(self.size),
            "--rate", repr(self.rate or 0.0),
            "--fragmentation", repr(self.fragmentation),
            "--hold", repr(-1.0 if self.hold is None else self.hold),
            "--release", self.release,
            "--deadline", repr(0.0 if deadline is None else max(deadline, 0.1)),
            "--status", str(status),
            "--parent-fd", str(parent_fd),
            "--meta", json.dumps(meta, sort_keys=True),
        ]  # fmt: skip


@dataclass
class Supervisor:
    """One stressor: its engine processes in ``group``, respawned after OOM kills when asked."""

    stressor_id: str
    group: Cgroup
    spec: EngineSpec
    status: Path
    ledger: Ledger
    entry: Entry
    target: dict[str, Any]
    respawn: bool = False
    detach: bool = False
    deadline: float | None = None  # time.monotonic(): the engine's own end
    respawn_until: float | None = None  # time.monotonic(): the end of the pressure window
    pids: list[int] = field(default_factory=list)
    kills: int = 0
    exits: list[int] = field(default_factory=list)
    reached: int = 0
    outcome: str | None = None
    error: str | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    _process: subprocess.Popen[bytes] | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _first: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self, *, timeout: float = 30.0) -> int:
        """Spawn the first engine; returns its pid, or raises what stopped it from starting."""
        self.started_at = time.monotonic()
        with _LIVE_LOCK:
            _LIVE[self.stressor_id] = self
        self._thread = threading.Thread(
            target=self._run, name=f"chaosmem-stress-{self.stressor_id}", daemon=True
        )
        self._thread.start()
        if not self._first.wait(timeout) or not self.pids:
            self._stopping.set()
            raise ChaosmemError(
                f"stressor {self.stressor_id} could not start in {self.group.path}: {self.error}"
            )
        return self.pids[0]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the stressor to end for good (respawns included); True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def stop(self, *, grace: float = 1.0) -> list[int]:
        """Ask the engine to end (SIGTERM), SIGKILL it after ``grace``; no respawn follows."""
        self._stopping.set()
        process = self._process
        ended: list[int] = []
        if process is not None and process.poll() is None:
            # NB: poll() reaps our own child, so a recycled pid is never signalled.
            ended += end_processes(
                lambda: [process.pid] if process.poll() is None else [], grace=grace
            )
        self.join(grace + 5.0)
        return ended

    # -- the thread ------------------------------------------------------------------------

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _spawn(self, generation: int) -> tuple[subprocess.Popen[bytes], int | None]:
        meta = {
            "cgroup": str(self.group.path),
            "target": self.target,
            "generation": generation,
            "kills": self.kills,
            "run": self.entry.run,
        }
        read_end, write_end = (-1, None) if self.detach else os.pipe()
        argv = self.spec.argv(
            stressor_id=self.stressor_id,
            status=self.status,
            parent_fd=read_end,
            deadline=self._remaining(),
            meta=meta,
        )
        try:
            with open_private(log_path(self.status), "ab") as log:
                process = self.group.spawn(
                    argv,
                    stdout=log,
                    stderr=log,
                    die_with_parent=not self.detach,
                    new_session=self.detach,
                    pass_fds=() if self.detach else (read_end,),
                )
        except BaseException:
            if write_end is not None:
                os.close(write_end)
            raise
        finally:
            if read_end >= 0:
                os.close(read_end)
        update_status(
            self.status,
            **meta,
            id=self.stressor_id,
            pid=process.pid,
            phase="ramp",
            bytes=0,
            size=self.spec.size,
        )
        return process, write_end

    def _oom_count(self) -> int | None:
        try:
            return self.group.oom_kill_count()
        except (ChaosmemError, OSError):
            return None

    def _run(self) -> None:
        generation = 0
        try:
            while True:
                before = self._oom_count()
                try:
                    process, write_end = self._spawn(generation)
                except ChaosmemError as exc:
                    self.error = str(exc)
                    self.outcome = "failed"
                    return
                self._process = process
                if self._stopping.is_set():  # NB: stop() may have looked at the previous process
                    process.terminate()
                self.pids.append(process.pid)
                self._first.set()
                try:
                    code = process.wait()
                finally:
                    if write_end is not None:
                        os.close(write_end)
                self.exits.append(code)
                last = read_status(self.status) or {}
                touched = int(last.get("touched", last.get("bytes", 0)) or 0)
                self.reached = max(self.reached, touched, read_progress(self.status))
                after = self._oom_count()
                killed = code == -signal.SIGKILL and not self._stopping.is_set()
                oom = killed and before is not None and after is not None and after > before
                if oom:
                    self.kills += 1
                    update_status(
                        self.status, phase="killed", oom_killed=True, kills=self.kills, exit=code, bytes=0,
                        reached=read_progress(self.status),
                    )  # fmt: skip
                if oom and self._respawn_now():
                    generation += 1
                    continue
                self.outcome = self._classify(code, oom)
                if last.get("phase") != "done" and not oom:
                    # the engine could not say so itself (SIGKILL): its memory is gone with it
                    update_status(
                        self.status, phase="done", bytes=0, reason=self.outcome, exit=code
                    )
                if self.outcome == "failed":
                    self.error = f"the engine exited with code {code}; see {log_path(self.status)}"
                return
        finally:
            self.ended_at = time.monotonic()
            self._first.set()
            with _LIVE_LOCK:
                _LIVE.pop(self.stressor_id, None)
            self._close_entry()

    def _respawn_now(self) -> bool:
        """After an OOM kill: whether to start again (after a short pause a stop can cut)."""
        if not self.respawn or self._stopping.is_set():
            return False
        if (
            self.respawn_until is not None
            and self.respawn_until - time.monotonic() <= _RESPAWN_PAUSE
        ):
            return False
        return self._entry_open() and not self._stopping.wait(_RESPAWN_PAUSE)

    def _classify(self, code: int, oom: bool) -> str:
        if oom:
            return "oom-killed"
        if self._stopping.is_set() and code in (
            -signal.SIGTERM,
            -signal.SIGKILL,
            engine.EXIT_STOPPED,
        ):
            return "stopped"
        if code < 0:
            return f"killed-by-{signal.Signals(-code).name}"
        return _OUTCOMES.get(code, "failed")

    def _entry_open(self) -> bool:
        return any(e.id == self.entry.id for e in self.ledger.read().open(kind=self.entry.kind))

    def _close_entry(self) -> None:
        try:
            if self._entry_open():
                self.ledger.close(self.entry, self.outcome or "ended")
        except OSError:
            pass  # the state dir went away; rollback will find no process and close it

    # -- what the action reports ------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        status = read_status(self.status) or {}
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        return {
            "id": self.stressor_id,
            "pids": list(self.pids),
            "cgroup": str(self.group.path),
            "bytes": self.reached,
            "seconds": round(end - self.started_at, 3),
            "oom_killed": self.kills > 0,
            "kills": self.kills,
            "respawns": max(len(self.pids) - 1, 0),
            "exit_codes": list(self.exits),
            "outcome": self.outcome or "running",
            "phase": status.get("phase"),
            "status_file": str(self.status),
            **({"error": self.error} if self.error else {}),
        }
