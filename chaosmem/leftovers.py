"""Find and end what chaosmem left running without trusting the ledger: ``chaosmem rollback --sweep``.

The ledger is the first source of truth, but a ledger can be lost (deleted, torn, replaced). So
every service and stressor can be found again from what it leaves beside it:

* a service runs in a cgroup named ``chaosmem-<name>`` and leaves ``STATE/services/<name>.json``
  (its cgroup, the pid of the process that started it, its run);
* a stressor is an engine process whose command line carries ``--id <id>``; it leaves
  ``STATE/stress/<id>.json`` (its cgroup, its pid).

A sweep ends every such service cgroup under the cgroup root (and every one a record names) and
every such engine under the root (or named by a status file), except those that belong to an
open ledger entry whose owner is still alive: another run that is still going is left alone.
An owner is "alive" only when a process with its pid runs and started before the entry was
written (a recycled pid started later).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import Entry, Ledger
from chaosmem.local.service import SERVICE_PREFIX
from chaosmem.stress.stopping import stop_processes
from chaosmem.targets.cgroup import Cgroup, holds_self
from chaosmem.targets.mounts import find_mount, memory_cgroup_of

__all__ = ["SERVICE_PREFIX", "SweepResult", "owner_alive", "sweep"]

_MAX_DEPTH = 6
_ENGINE_MARKS = ("chaosmem/stress/engine.py", "chaosmem.stress.engine")


@dataclass
class SweepResult:
    ended: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0  # pragma: no cover - every Linux has btime


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (unix time), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] in {"Z", "X"}:
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def owner_alive(entry: Entry) -> bool:
    """Whether the process that wrote ``entry`` still runs (and is that process, not a reuse)."""
    started = _started_at(entry.pid)
    return started is not None and started <= entry.at + 1.0


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _engines() -> dict[str, list[int]]:
    """Every live stress engine on the host, by stressor id."""
    found: dict[str, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        argv = _cmdline(int(name))
        if not any(arg.endswith(_ENGINE_MARKS) for arg in argv):
            continue
        for flag, value in itertools.pairwise(argv):
            if flag == "--id":
                found.setdefault(value, []).append(int(name))
    return found


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _service_cgroups(root: Path) -> list[Path]:
    found: list[Path] = []

    def walk(directory: Path, depth: int) -> None:
        with contextlib.suppress(OSError):
            for child in sorted(directory.iterdir()):
                if not child.is_dir() or child.is_symlink():
                    continue
                if child.name.startswith(SERVICE_PREFIX):
                    found.append(child)
                elif depth < _MAX_DEPTH:
                    walk(child, depth + 1)

    walk(root, 0)
    return found


def _records(directory: Path, folder: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    with contextlib.suppress(OSError):
        for path in sorted((directory / folder).glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text(encoding="utf-8")[: 1 << 20])
                if isinstance(data, dict):
                    records.append(data)
    return records


def sweep(directory: Path, *, root: Path, dry_run: bool = False, grace: float = 1.0) -> SweepResult:
    """End leftover services and stressors under ``root`` and those the state dir's records name."""
    result = SweepResult()
    live = [e for e in Ledger(directory).read().open() if owner_alive(e)]
    kept_paths = {str(e.target.get("path")) for e in live if e.kind == "service"}
    kept_ids = {str(e.undo.get("id")) for e in live if e.kind == "stressor"}

    services = {str(p) for p in _service_cgroups(root)}
    for record in _records(directory, "services"):
        path = record.get("cgroup")
        if (
            isinstance(path, str)
            and Path(path).name.startswith(SERVICE_PREFIX)
            and Path(path).is_dir()
            and find_mount(Path(path)) is not None
        ):
            services.add(path)
    for path in sorted(services):
        if path in kept_paths:
            result.kept.append(f"service cgroup {path}: its run is still going")
            continue
        if dry_run:
            result.ended.append(f"would end service cgroup {path}")
            continue
        try:
            group = Cgroup.at(path)
            if holds_self(group) is not None:  # NB: never end the sweep's own cgroup
                result.kept.append(f"service cgroup {path}: holds this process")
                continue
            ended = group.remove(grace=grace)
            result.ended.append(f"service cgroup {path}: ended pids {ended}, removed")
        except ChaosmemError as exc:
            result.errors.append(f"service cgroup {path}: {exc}")

    engines = _engines()
    named = {str(r["id"]): r for r in _records(directory, "stress") if isinstance(r.get("id"), str)}
    for stressor_id, pids in sorted(engines.items()):
        in_root = False
        for pid in pids:
            with contextlib.suppress(ChaosmemError, OSError):
                in_root = in_root or _under(memory_cgroup_of(pid), root)
        if not in_root and stressor_id not in named:
            continue
        if stressor_id in kept_ids:
            result.kept.append(f"stressor {stressor_id}: its run is still going")
            continue
        if dry_run:
            result.ended.append(f"would end stressor {stressor_id} (pids {pids})")
            continue
        stop_processes(stressor_id, pids, grace=grace)
        result.ended.append(f"stressor {stressor_id}: ended pids {pids}")
    return result
