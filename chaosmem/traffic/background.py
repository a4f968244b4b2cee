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

A replay in pods (``scale``) runs the same way: the worker process creates the Indexed Job,
follows its pods' logs into the replay's results and deletes it
(:func:`chaosmem.traffic.kubejob.run_job`). Both ledger entries are written here, before the
worker starts: the Job's (kind ``replay-job``, its undo deletes the Job and its Secret) and
then the worker's, so a rollback (newest first) stops the worker first (SIGTERM: it deletes the
Job, merges what its pods printed last, and writes the final summary; it gets
:data:`JOB_GRACE` for that, not 5 s) and then deletes the Job if the worker could not. The
worker's stdin carries what must not be on disk: the masked options, the ``scale`` (a
``capture_url`` may hold a password) and the run's Kubernetes client settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
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
from chaosmem.traffic.results import (
    new_replay_id,
    read_summary,
    replay_dir,
    set_latest,
    write_json_atomic,
)

__all__ = ["LEDGER_KIND", "start_background", "stop_replay", "worker_pid"]

LEDGER_KIND = "replay"
WORKER_MODULE = "chaosmem.traffic.worker"
#: How long a freshly started worker has to write its first summary before we call it failed.
START_TIMEOUT = 15.0
#: The same for a replay in pods, whose worker first creates the Job (and imports the
#: kubernetes client): a hang guard, not a speed figure.
JOB_START_TIMEOUT = 120.0
#: How long a replay in pods has to stop before it is killed: the Job deleted, its pods'
#: last lines merged (:data:`chaosmem.traffic.kubejob.STOP_DRAIN`), the summary written.
JOB_GRACE = 40.0
#: The most a ledger entry may ask to wait for a worker to stop (seconds).
MAX_GRACE = 300.0

_children = Children()
# NB: PR_SET_PDEATHSIG fires when the parent *thread* exits, not the process. chaos run may
# call activities from short-lived threads (background activities), so workers are spawned
# from this one long-lived thread, which ends only with the interpreter.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaosmem-replay-spawner")


def _spawn(out: Path, secrets: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The worker for ``out``; ``secrets`` (what must not be on disk) goes down its stdin."""
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


def start_background(
    options: ReplayOptions,
    *,
    state: Path,
    scale: Mapping[str, Any] | None = None,
    kubernetes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start a worker process for ``options``; returns once it runs (or raises why it did not).

    ``scale`` (validated by :func:`chaosmem.traffic.kubejob.parse_scale`) makes it a replay in
    pods, through the cluster that ``kubernetes`` (the run's ``chaosmem_kubernetes`` client
    settings, None for the environment's) points at; it runs once the Job exists.
    """
    job = None
    if scale is None:
        # Compiled here (or found in the cache), so a bad capture fails the activity and the
        # worker starts sending at once; it finds the same schedule in the cache.
        compile_capture(options, cache=state / "cache" / "schedules")
    else:
        from chaosmem.traffic.kubejob import parse_scale, public_scale

        job = parse_scale(scale)
    rid = new_replay_id()
    out = private_dir(replay_dir(state, rid))
    ledger = Ledger(state)
    entries = []
    spec: dict[str, Any] = {"options": options.public_spec(), "state_dir": str(state)}
    undo: dict[str, Any] = {"state_dir": str(state), "replay_id": rid}
    if job is not None:
        from chaosmem.traffic.kubejob import record_job

        # NB: before the worker (which creates the Job) exists; a rollback undoes it last
        job_entry = record_job(ledger, options, job, replay_id=rid)
        entries.append(job_entry)
        spec["job"] = {"scale": public_scale(job), "ledger_entry": job_entry.id}
        undo["grace"] = JOB_GRACE
    entry = ledger.record(
        kind=LEDGER_KIND,
        target={"replay_id": rid, "target_url": redact_url(options.target_url)},
        undo=undo,
    )
    entries.append(entry)
    write_json_atomic(out / "spec.json", {**spec, "replay_id": rid, "ledger_entry": entry.id})
    set_latest(state, rid)
    secrets: dict[str, Any] = {"options": options.secret_spec()}
    if job is not None:
        secrets.update(scale=dict(scale or {}), kubernetes=dict(kubernetes or {}) or None)
    try:
        proc = _spawner.submit(_spawn, out, secrets).result()
    except OSError as exc:
        for made in entries:
            ledger.close(made, "not-applied")
        raise ChaosmemError(f"could not start the replay worker: {exc}") from None
    _children.add(rid, proc)
    replace_private(out / "worker.pid", f"{proc.pid}\n")
    deadline = time.monotonic() + (START_TIMEOUT if job is None else JOB_START_TIMEOUT)
    while not (out / "summary.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (out / "worker.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            stop_replay(state, rid, grace=1.0 if job is None else JOB_GRACE)
            ledger.close(entry, "not-applied")
            if job is not None:
                # NB: undone, not just closed: the worker may have created the Job before it hung
                settings = {"chaosmem_kubernetes": dict(kubernetes)} if kubernetes else None
                with contextlib.suppress(Exception):  # then it stays open for rollback
                    ledger.undo(entries[0], settings)
            raise ChaosmemError(
                f"the replay worker did not start (see {out / 'worker.log'}): {log.strip()}"
            )
        time.sleep(0.02)
    started: dict[str, Any] = {
        "replay_id": rid,
        "pid": proc.pid,
        "state": "running",
        "results": str(out),
    }
    if job is not None:
        summary = read_summary(state, rid)
        if summary.get("state") == "failed":
            # NB: the Job could not be created (a 403, a 422...): the worker is ending, after
            # it deleted what it may have created and closed its ledger entries
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(JOB_GRACE)
            stop_replay(state, rid, grace=JOB_GRACE)
            raise ChaosmemError(f"the replay in pods did not start: {summary.get('error')}")
        started["job"] = summary.get("job")
    return started


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
    grace = undo.get("grace", 5.0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
        grace = 5.0
    return stop_replay(
        Path(str(undo["state_dir"])), str(undo["replay_id"]), grace=min(float(grace), MAX_GRACE)
    )


def read_spec(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "spec.json").read_text(encoding="utf-8"))
    return data
