"""Change a target's memory limit through the ledger, and put it back.

The order is the whole point: read what is there, write it to the ledger (fsynced), then change
the target. A crash after the ledger write leaves an entry whose undo is harmless; a crash before
it leaves nothing changed.
"""

from __future__ import annotations

from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import Ledger
from chaosmem.rollback import load_handlers
from chaosmem.targets import MemoryTarget
from chaosmem.units import format_size

__all__ = ["LIMIT_KINDS", "restore_limits", "tighten"]

#: Ledger kinds that record a limit change, one per backend.
LIMIT_KINDS = ("cgroup-limit", "pod-limit")
_PAGE = 4096


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


def tighten(
    target: MemoryTarget, ledger: Ledger, *, limit: int | None, fraction: float | None
) -> dict[str, Any]:
    """Set the new limit, recorded first; returns before/after/usage (bytes, None = unlimited).

    Below current usage, cgroup v1 reclaims and otherwise refuses with EBUSY (this raises
    :class:`~chaosmem.targets.cgroup.LimitBusy` and nothing changes); cgroup v2 accepts the
    limit, reclaims, and OOM-kills until usage fits. ``below_usage`` says which case it was.
    """
    target.check_changeable()
    requested = new_limit(target, limit=limit, fraction=fraction)
    before = target.memory_limit()
    usage = target.memory_usage()
    kills = target.oom_kill_count()
    entry = ledger.record(kind=target.limit_kind, target=target.spec, undo=target.limit_state())
    try:
        target.set_memory_limit(requested)
    except ChaosmemError:
        # NB: only a refusal proves nothing changed. An interrupt (Ctrl-C) may land after the
        # kernel took the new limit, so the entry then stays open and the undo runs anyway.
        ledger.close(entry, "not-applied")
        raise
    return {
        "target": target.spec,
        "before": before,
        "after": target.memory_limit(),
        "requested": requested,
        "usage": usage,
        "usage_after": target.memory_usage(),
        "below_usage": usage > requested,
        "oom_kills_before": kills,
        "oom_kills_after": target.oom_kill_count(),
        "summary": f"{target.describe()}: limit {format_size(before)} -> {format_size(requested)} "
        f"(usage {format_size(usage)})",
        "ledger_entry": entry.id,
    }


def restore_limits(ledger: Ledger, *, target: MemoryTarget | None) -> list[dict[str, Any]]:
    """Undo the open limit entries (of ``target`` only, when given), newest first.

    Idempotent: a second call finds nothing open and returns an empty list.
    """
    load_handlers()
    entries = [e for e in ledger.read().open() if e.kind in LIMIT_KINDS]
    if target is not None:
        entries = [e for e in entries if e.target == target.spec]
    return [{"target": e.target, "done": ledger.undo(e)} for e in reversed(entries)]
