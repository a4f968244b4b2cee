"""Change a target's memory limit through the ledger, and put it back.

The order is the whole point: read what is there, write it to the ledger (fsynced), then change
the target. A crash after the ledger write leaves an entry whose undo is harmless; a crash before
it leaves nothing changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.host import host_memory
from chaosmem.ledger import Entry, Ledger, current_run
from chaosmem.rollback import load_handlers
from chaosmem.targets import LIMIT_KINDS, LimitRefused, MemoryTarget
from chaosmem.targets.oombase import run_kill_count
from chaosmem.units import format_size

__all__ = [
    "DEFAULT_SETTLE",
    "LIMIT_KINDS",
    "check_ceiling",
    "held_by_other_run",
    "restore_limits",
    "tighten",
]

_PAGE = 4096
#: How long to wait for an asynchronous change (a pod resize) to settle, in seconds.
DEFAULT_SETTLE = 60.0


def new_limit(target: MemoryTarget, *, limit: int | None, fraction: float | None) -> int:
    """The absolute limit to set: ``limit``, or ``fraction`` of the limit (of usage when unlimited)."""
    if limit is not None:
        return limit
    assert fraction is not None
    before = target.memory_limit()
    base = before if before is not None else target.memory_usage()
    if base <= 0:
        raise ChaosmemError(
            f"{target.describe()} has no limit and uses no memory: a fraction of nothing is nothing; "
            "pass an absolute 'limit' instead"
        )
    return max(_PAGE, int(base * fraction))


def check_ceiling(target: MemoryTarget, requested: int, *, allow_above_host: bool) -> None:
    """Refuse a limit the backend cannot hold, or (local targets) one above the host's memory.

    Why: v1 reads a write of 2**64 as 0 and one of 1e20 as something else entirely, and a value
    of 4Ei or more reads back as "unlimited"; a limit above the host's memory limits nothing,
    so the experiment would silently test no pressure at all (``allow_above_host`` says that is
    meant).
    """
    ceiling: int | None = getattr(target, "max_limit", None)
    if ceiling is not None and requested > ceiling:
        raise InvalidArgument(
            "limit",
            requested,
            f"a limit of at most {format_size(ceiling)} ({ceiling} bytes): "
            f"{target.describe()} cannot hold more",
        )
    host = host_memory() if target.limit_kind == "cgroup-limit" else None
    if host is not None and requested > host and not allow_above_host:
        raise InvalidArgument(
            "limit",
            requested,
            f"a limit of at most the host's memory ({format_size(host)}), "
            "or pass allow_above_host=true to mean it",
        )


def same_target(recorded: Mapping[str, Any], target: MemoryTarget) -> bool:
    """Whether a ledger entry's target is ``target``: the same spec, or (a cgroup reached through
    another mount of its hierarchy) the same directory by device and inode."""
    spec = target.spec
    if dict(recorded) == spec:
        return True
    here, there = spec.get("path"), recorded.get("path")
    if spec.get("type") != "cgroup" or recorded.get("type") != "cgroup" or not here or not there:
        return False
    try:
        a, b = os.stat(here), os.stat(str(there))
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def held_by_other_run(ledger: Ledger, target: MemoryTarget) -> Entry | None:
    """An open limit entry on ``target`` that belongs to another run (or to no run), if any."""
    run = current_run()
    for entry in ledger.read().open():
        if entry.kind in LIMIT_KINDS and entry.run != run and same_target(entry.target, target):
            return entry
    return None


def _usage(target: MemoryTarget) -> int | None:
    """Usage for the report, None when the backend cannot tell (a cluster without
    metrics-server): the change itself does not depend on it."""
    try:
        return target.memory_usage()
    except ChaosmemError:
        return None


def tighten(
    target: MemoryTarget,
    ledger: Ledger,
    *,
    limit: int | None,
    fraction: float | None,
    allow_above_host: bool = False,
    settle: float = DEFAULT_SETTLE,
) -> dict[str, Any]:
    """Set the new limit, recorded first; returns before/after/usage (bytes, None = unlimited).

    Below current usage, cgroup v1 reclaims and otherwise refuses with EBUSY (this raises
    :class:`~chaosmem.targets.cgroup.LimitBusy` and nothing changes); cgroup v2 accepts the
    limit, reclaims, and OOM-kills until usage fits. ``below_usage`` says which case it was.
    A pending change (a pod resize) is waited for up to ``settle`` seconds before the figures
    after it are read; ``change`` says how it ended.
    """
    target.check_changeable()
    requested = new_limit(target, limit=limit, fraction=fraction)
    check_ceiling(target, requested, allow_above_host=allow_above_host)
    holder = held_by_other_run(ledger, target)
    if holder is not None:
        who = f"run {holder.run}" if holder.run else "a change made outside any run"
        raise ChaosmemError(
            f"{target.describe()} is already tightened by {who} (ledger entry {holder.id}, "
            f"pid {holder.pid}); one run must not undo another's limit: wait for it to end, "
            f"or run `chaosmem rollback{' --run ' + holder.run if holder.run else ''}` if it crashed"
        )
    before = target.memory_limit()
    usage = _usage(target)
    # NB: the OOM kills as the probes count them (this run's, during a run)
    counted = {"chaosmem_state_dir": str(ledger.directory)}
    kills = run_kill_count(target, counted)
    entry = ledger.record(kind=target.limit_kind, target=target.spec, undo=target.limit_state())
    try:
        change = target.set_memory_limit(requested)
    except LimitRefused:
        # NB: only a refusal proves nothing changed. A timeout or an interrupt (Ctrl-C) may land
        # after the kernel or the API server took the new limit, so the entry then stays open
        # and the undo runs anyway.
        ledger.close(entry, "not-applied")
        raise
    change = change.wait(settle)
    after = target.memory_limit()
    return {
        "target": target.spec,
        "before": before,
        "after": after,
        "requested": requested,
        "usage": usage,
        "usage_after": _usage(target),
        "below_usage": None if usage is None else usage > requested,
        "oom_kills_before": kills,
        "oom_kills_after": run_kill_count(target, counted),
        "change": change.summary(),
        "summary": f"{target.describe()}: limit {format_size(before)} -> {format_size(requested)} "
        f"(usage {format_size(usage) if usage is not None else 'unknown'}): {change.outcome}",
        "ledger_entry": entry.id,
    }


def restore_limits(
    ledger: Ledger,
    *,
    target: MemoryTarget | None,
    run: str | None,
    configuration: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Undo the open limit entries of ``run`` (every run's when None), of ``target`` only when
    given, newest first.

    Idempotent: a second call finds nothing open and returns an empty list.
    """
    entries = [e for e in ledger.read().open(run=run) if e.kind in LIMIT_KINDS]
    if target is not None:
        entries = [e for e in entries if same_target(e.target, target)]
    load_handlers({e.kind for e in entries})
    return [{"target": e.target, "done": ledger.undo(e, configuration)} for e in reversed(entries)]
