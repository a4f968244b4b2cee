"""Memory as Kubernetes counts it: the working set, and the cgroup's usage split into anonymous
memory and page cache.

The kubelet's eviction and ``kubectl top`` use the working set, ``usage − inactive_file``
(v1: ``total_inactive_file``, hierarchical), not the raw usage, which also counts page cache the
kernel can drop. The source article's point is that Go's view, the cgroup's usage and the
working set drift apart; this puts the three side by side.
"""

from __future__ import annotations

from typing import Any

__all__ = ["memory_breakdown"]

# (v1 memory.stat key, v2 memory.stat key)
_KEYS = {
    "inactive_file": ("total_inactive_file", "inactive_file"),
    "anon": ("total_rss", "anon"),
    "file": ("total_cache", "file"),
}


def memory_breakdown(target: Any, usage: int | None = None) -> dict[str, int] | None:
    """``{"usage", "working_set", "anon", "file", "inactive_file"}`` in bytes, or None for a
    target without a ``memory.stat`` (a Kubernetes target: its metrics come from elsewhere).

    ``usage``: a reading the caller already took, so the working set never exceeds the usage it
    is shown beside (two reads of a growing cgroup differ).
    """
    stat_of = getattr(target, "stat", None)
    if stat_of is None:
        return None
    stat = stat_of()
    version = getattr(target, "version", 2)
    usage = int(target.memory_usage()) if usage is None else int(usage)
    out = {"usage": usage}
    for name, (v1, v2) in _KEYS.items():
        key = v1 if version == 1 else v2
        value = stat.get(key, stat.get(v2 if version == 1 else v1))
        if value is not None:
            out[name] = int(value)
    out["working_set"] = max(0, usage - out.get("inactive_file", 0))
    return out
