"""``GODEBUG=gctrace=1`` lines, parsed.

The runtime writes one line per GC to stderr (Go 1.19 format)::

    gc 12 @3.204s 4%: 0.031+1.2+0.022 ms clock, 0.12+0.5/1.1/0+0.09 ms cpu, 11->12->6 MB, 12 MB goal, 0 MB stacks, 0 MB globals, 4 P

The clock triple is sweep termination (stop-the-world), concurrent mark, mark termination
(stop-the-world): the pause is the first plus the last. The heap triple is the heap at GC start,
at GC end, and the live heap marked; ``goal`` is the heap size the next GC aims for. Lines are
bounded (1000 characters) and numbers must be finite; anything else is skipped, not guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GcLine", "parse_gctrace", "parse_line"]

MAX_LINE = 1000
_NUM = r"(\d{1,12}(?:\.\d{1,9})?)"
_LINE = re.compile(
    rf"gc (\d{{1,12}}) @{_NUM}s (\d{{1,3}})%: {_NUM}\+{_NUM}\+{_NUM} ms clock, .*? "
    rf"(\d{{1,12}})->(\d{{1,12}})->(\d{{1,12}}) MB, (\d{{1,12}}) MB goal"
)
MB = 1 << 20


@dataclass(frozen=True)
class GcLine:
    number: int
    since_start: float
    cpu_percent: int
    pause_ms: float
    mark_ms: float
    heap_start: int
    heap_end: int
    heap_live: int
    heap_goal: int
    forced: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "gc": self.number,
            "since_start": self.since_start,
            "cpu_percent": self.cpu_percent,
            "pause_ms": self.pause_ms,
            "mark_ms": self.mark_ms,
            "heap_start": self.heap_start,
            "heap_end": self.heap_end,
            "heap_live": self.heap_live,
            "heap_goal": self.heap_goal,
            "forced": self.forced,
        }


def parse_line(line: str) -> GcLine | None:
    """One gctrace line, or None for any other line (or a malformed one)."""
    if len(line) > MAX_LINE or not line.startswith("gc "):
        return None
    match = _LINE.match(line)
    if not match:
        return None
    g = match.groups()
    stw1, mark, stw2 = float(g[3]), float(g[4]), float(g[5])
    since = float(g[1])
    if not all(math.isfinite(v) for v in (stw1, mark, stw2, since)):
        return None
    return GcLine(
        number=int(g[0]),
        since_start=since,
        cpu_percent=int(g[2]),
        pause_ms=round(stw1 + stw2, 6),
        mark_ms=mark,
        heap_start=int(g[6]) * MB,
        heap_end=int(g[7]) * MB,
        heap_live=int(g[8]) * MB,
        heap_goal=int(g[9]) * MB,
        forced=line.rstrip().endswith("(forced)"),
    )


def parse_gctrace(lines: Iterable[str]) -> list[GcLine]:
    return [gc for line in lines if (gc := parse_line(line)) is not None]
