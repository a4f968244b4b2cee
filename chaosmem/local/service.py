"""Start a command in a fresh child memory cgroup, wait until it answers, and stop it again.

This is what lets a CI gate run a service under a production-sized limit on a build machine with
no cluster. The service is recorded in the ledger before its cgroup exists; stopping it (or
rolling it back after a crash) ends every process in the cgroup, by PID, and removes the cgroup.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.interrupts import StopRequest, stop_on_signals
from chaosmem.ledger import Entry, Ledger, register_undo
from chaosmem.lifecycle import Children
from chaosmem.state import open_private, private_dir, replace_private
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.local import SERVICE_KIND
from chaosmem.targets.oombase import announce_created
from chaosmem.targets.placement import release
from chaosmem.units import format_size

#: Every service cgroup's name starts with this: how rollback and --sweep know it is ours.
SERVICE_PREFIX = "chaosmem-"

__all__ = ["ServiceSpec", "start", "stop"]

#: The services this process started, by cgroup path (see :class:`Children`).
_children = Children()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: Sequence[str]
    memory_limit: int | None
    env: Mapping[str, str]
    ready_url: str | None
    ready_timeout: float
    cwd: str | None = None


def _open_entry(ledger: Ledger, name: str) -> Entry | None:
    found = [e for e in ledger.read().open(kind=SERVICE_KIND) if e.target.get("name") == name]
    return found[-1] if found else None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _answers(url: str) -> bool:
    """Whether ``url`` answers with a status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _wait_ready(url: str, deadline: float, process_alive: Any) -> float:
    """Poll ``url`` until it answers with a status below 500; returns seconds waited."""
    started = time.monotonic()
    stopping = StopRequest()
    with stop_on_signals(stopping.set, work="waiting for the service to be ready"):
        while True:
            if not process_alive():
                raise ChaosmemError("exited before it became ready")
            if _answers(url) and process_alive():
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise ChaosmemError(f"did not answer {url} within the ready timeout")
            if stopping.wait(0.05):
                raise ChaosmemError("was interrupted (SIGTERM/SIGINT) before it became ready")


def start(
    spec: ServiceSpec, *, parent: Cgroup, directory: Path, subtree: Path | None = None
) -> dict[str, Any]:
    """Start the service under ``parent``; returns its pid, cgroup, log and pidfile paths.

    ``subtree`` is chaosmem's own sub-tree that ``parent`` lives in (cgroup v2), removed with the
    service's cgroup once no other service is left in it.
    """
    ledger = Ledger(directory)
    if _open_entry(ledger, spec.name) is not None:
        raise ChaosmemError(f"service {spec.name!r} is already running; stop_service it first")
    path = parent.path / f"{SERVICE_PREFIX}{spec.name}"
    if path.exists() and Cgroup(path, parent.version).pids():
        raise ChaosmemError(
            f"{path} already holds processes (left by a crash?); run `chaosmem rollback`"
        )
    if spec.ready_url and _answers(spec.ready_url):
        # NB: otherwise another process on the port would pass for our service being ready.
        raise ChaosmemError(
            f"something already answers {spec.ready_url} before service {spec.name!r} started "
            "(is the port in use?)"
        )
    if path.exists():
        # NB: an empty leftover (a crash) is removed, not joined: the service's cgroup must be
        # a new one, whose OOM-kill counter (and peak) start at 0 with it, for this run.
        try:
            path.rmdir()
        except OSError as exc:
            raise ChaosmemError(
                f"{path} is left from an earlier service and cannot be removed "
                f"({exc.strerror}); run `chaosmem rollback --sweep`"
            ) from None
    services = private_dir(directory / "services")
    log, pidfile = services / f"{spec.name}.log", services / f"{spec.name}.pid"
    # NB: environment values may be secrets; the ledger keeps their names only.
    entry = ledger.record(
        kind=SERVICE_KIND,
        target={"type": "service", "name": spec.name, "path": str(path)},
        undo={
            "path": str(path),
            "argv": list(spec.argv),
            "env_keys": sorted(spec.env),
            **({"subtree": str(subtree)} if subtree is not None else {}),
        },
    )
    record = services / f"{spec.name}.json"
    try:
        # NB: the record beside the cgroup finds it again should the ledger be lost (--sweep)
        replace_private(
            record,
            json.dumps(
                {"name": spec.name, "cgroup": str(path), "owner": os.getpid(), "run": entry.run}
            ),
        )
        group = parent.child(path.name)
        if spec.memory_limit is not None:
            group.set_memory_limit(spec.memory_limit)  # read back by the cgroup itself
        announce_created(group)  # the run's OOM watch is on before the service runs
        with open_private(log, "ab") as out:
            process = group.spawn(
                spec.argv,
                env={**os.environ, **spec.env},
                cwd=spec.cwd,
                stdout=out,
                stderr=out,
                new_session=True,
            )
        _children.add(str(path), process)
        replace_private(pidfile, f"{process.pid}\n")
        waited = 0.0
        if spec.ready_url:
            try:
                waited = _wait_ready(
                    spec.ready_url,
                    time.monotonic() + spec.ready_timeout,
                    lambda: process.poll() is None,
                )
            except ChaosmemError as exc:
                raise ChaosmemError(
                    f"service {spec.name!r} {exc} (exit code {process.poll()}); last lines of {log}:\n{_tail(log)}"
                ) from None
    except BaseException:
        ledger.undo(entry)
        raise
    return {
        "name": spec.name,
        "pid": process.pid,
        "cgroup": str(path),
        "memory_limit": spec.memory_limit,
        "log": str(log),
        "pidfile": str(pidfile),
        "ready_after": round(waited, 3),
        "target": {"type": "service", "name": spec.name},
        "summary": f"{spec.name} (pid {process.pid}) under {format_size(spec.memory_limit)} in {path}",
    }


def stop(name: str, *, directory: Path, grace: float) -> dict[str, Any]:
    """End every process of the service and remove its cgroup; returns what it ended."""
    ledger = Ledger(directory)
    entry = _open_entry(ledger, name)
    if entry is None:
        raise ChaosmemError(f"no running service named {name!r} in {directory}")
    group = Cgroup(Path(entry.undo["path"]), 0)
    kills = 0
    if group.path.is_dir():
        group = Cgroup.at(group.path)
        kills = group.oom_kill_count()
    ended = _remove(entry, grace=grace)
    ledger.close(entry, "stopped")
    (directory / "services" / f"{name}.json").unlink(missing_ok=True)  # nothing left to sweep
    return {"name": name, "stopped_pids": ended, "oom_kills": kills, "cgroup": entry.undo["path"]}


def _remove(entry: Entry, *, grace: float = 5.0) -> list[int]:
    """End the service's processes and remove its cgroup, which must be one chaosmem created:
    a ``chaosmem-*`` cgroup directory (a ledger line naming another cgroup is refused, never
    acted on: rollback must not end processes chaosmem did not start)."""
    path = Path(str(entry.undo.get("path")))
    if not path.is_absolute() or not path.name.startswith(SERVICE_PREFIX) or ".." in path.parts:
        raise ChaosmemError(
            f"ledger entry {entry.id} names {str(path)!r} as a service cgroup, which is not one "
            f"chaosmem creates ({SERVICE_PREFIX}NAME); refused, nothing ended"
        )
    ended = Cgroup.at(path).remove(grace=grace) if path.is_dir() else []
    _children.forget(str(path), wait=1.0)  # ended with its cgroup
    if entry.undo.get("subtree"):
        release(Path(entry.undo["subtree"]))
    return ended


@register_undo(SERVICE_KIND)
def _undo_service(entry: Entry) -> str:
    ended = _remove(entry)
    return f"service {entry.target.get('name')!r}: ended pids {ended}, removed {entry.undo['path']}"
