"""Background replays: a child process per replay, on the restore ledger, that cannot outlive us.

Why a process and not a thread: the source article overlaps the replay with a limit change and
allocation stress, so ``chaos run`` keeps working while the replay runs. A thread would share
the GIL with every other activity and probe of the experiment, and at thousands of requests a
second the replay's timing (and the experiment's) would suffer; a process has its own core.
It also lets ``stop_traffic_replay``, ``chaosmem rollback`` or the control stop the replay from
another process, through the ledger.

Three things keep a worker from outliving its experiment:

* it is recorded in the ledger (kind ``replay``) *before* it starts, so rollback stops it after
  any crash of the experiment, and it closes its own entry when it ends;
* it asks the kernel for ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``), and exits at
  once if the parent is already gone;
* it enforces its own deadline: ``duration`` + ``timeout`` inside the engine, and an
  ``alarm()`` a little later that kills it even if its event loop were stuck.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import Entry, Ledger, register_undo
from chaosmem.lifecycle import Children, alive, child_env, end_processes
from chaosmem.secrets import redact_url
from chaosmem.state import open_private, private_dir, replace_private
from chaosmem.traffic.compile import compile_capture
from chaosmem.traffic.options import ReplayOptions
from chaosmem.traffic.results import new_replay_id, replay_dir, set_latest, write_json_atomic

__all__ = ["LEDGER_KIND", "start_background", "stop_replay", "worker_pid"]

LEDGER_KIND = "replay"
WORKER_MODULE = "chaosmem.traffic.worker"
#: How long a freshly started worker has to write its first summary before we call it failed.
START_TIMEOUT = 15.0

_children = Children()
# NB: PR_SET_PDEATHSIG fires when the parent *thread* exits, not the process. chaos run may
# call activities from short-lived threads (background activities), so workers are spawned
# from this one long-lived thread, which ends only with the interpreter.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaosmem-replay-spawner")


def _spawn(out: Path, secrets: dict[str, Any]) -> subprocess.Popen[bytes]:
    with open_private(out / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(out), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=child_env(),
            start_new_session=True,  # a Ctrl-C meant for chaos run reaches us, not the worker
        )
    # NB: header values and URL passwords reach the worker through this pipe, never a file.
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError), proc.stdin:  # it died at once: checked below
        proc.stdin.write(json.dumps(secrets).encode())
    return proc


def start_background(options: ReplayOptions, *, state: Path) -> dict[str, Any]:
    """Start a worker process for ``options``; returns once it runs (or raises why it did not)."""
    # Compiled here (or found in the cache), so a bad capture fails the activity and the worker
    # starts sending at once; it finds the same schedule in the cache.
    compile_capture(options, cache=state / "cache" / "schedules")
    rid = new_replay_id()
    out = private_dir(replay_dir(state, rid))
    ledger = Ledger(state)
    entry = ledger.record(
        kind=LEDGER_KIND,
        target={"replay_id": rid, "target_url": redact_url(options.target_url)},
        undo={"state_dir": str(state), "replay_id": rid},
    )
    write_json_atomic(
        out / "spec.json",
        {
            "options": options.public_spec(),
            "state_dir": str(state),
            "replay_id": rid,
            "ledger_entry": entry.id,
        },
    )
    set_latest(state, rid)
    try:
        proc = _spawner.submit(_spawn, out, options.secret_spec()).result()
    except OSError as exc:
        ledger.close(entry, "not-applied")
        raise ChaosmemError(f"could not start the replay worker: {exc}") from None
    _children.add(rid, proc)
    replace_private(out / "worker.pid", f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while not (out / "summary.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (out / "worker.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            stop_replay(state, rid, grace=1.0)
            ledger.close(entry, "not-applied")
            raise ChaosmemError(
                f"the replay worker did not start (see {out / 'worker.log'}): {log.strip()}"
            )
        time.sleep(0.02)
    return {"replay_id": rid, "pid": proc.pid, "state": "running", "results": str(out)}


def worker_pid(state: Path, replay_id: str) -> int | None:
    """The pid of the replay's worker if that process is still this replay's worker."""
    try:
        pid = int((replay_dir(state, replay_id) / "worker.pid").read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return None
    child = _children.get(replay_id)
    if child is not None and child.poll() is not None:
        return None  # ours, ended and now reaped
    # NB: pids are reused; only a process running our worker for this very replay counts.
    out = str(replay_dir(state, replay_id))
    return pid if alive(pid, identity=lambda argv: WORKER_MODULE in argv and out in argv) else None


def stop_replay(state: Path, replay_id: str, *, grace: float = 5.0) -> str:
    """Stop a background replay: SIGTERM (it writes its summary), SIGKILL after ``grace``.

    Idempotent: a replay that already ended is left alone and said so.
    """
    pid = worker_pid(state, replay_id)
    if pid is None:
        _children.forget(replay_id)
        return f"replay {replay_id} had already ended"
    started = time.monotonic()
    end_processes(lambda: [pid] if worker_pid(state, replay_id) == pid else [], grace=grace)
    killed = time.monotonic() - started > grace
    how = f"killed (it did not stop within {grace:g}s)" if killed else "stopped"
    _children.forget(replay_id, wait=1.0)
    return f"replay {replay_id} (pid {pid}) {how}"


@register_undo(LEDGER_KIND)
def _undo_replay(entry: Entry) -> str:
    undo = entry.undo
    return stop_replay(Path(str(undo["state_dir"])), str(undo["replay_id"]))


def read_spec(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "spec.json").read_text(encoding="utf-8"))
    return data
