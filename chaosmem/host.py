"""What the machine itself has: the ceiling for limits and stress that name no other."""

from __future__ import annotations

__all__ = ["host_memory"]


def host_memory() -> int | None:
    """The host's memory in bytes (``MemTotal`` of ``/proc/meminfo``), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
