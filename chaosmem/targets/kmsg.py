"""The kernel's own account of each OOM kill, read from its log (``/dev/kmsg``).

Why the log and not the cgroup's files: by the time a watcher wakes up, the victim is dead and
its memory freed, so ``memory.usage_in_bytes`` and ``memory.stat`` describe the aftermath. The
kernel prints its OOM report *at* the kill: the usage and limit of the cgroup that hit its limit,
that cgroup's ``memory.stat``, the victim's pid, command and rss, each record stamped with the
kernel's monotonic clock (microseconds). The reports of two OOMs never interleave (the kernel
holds ``oom_lock`` while it prints one). The kernel rate-limits the header of its reports (the
usage, ``memory.stat`` and the cgroup's name; about 10 per 5 s), never the victim's line: in a
burst of kills some reports name only the victim.

Reading ``/dev/kmsg`` needs root (or CAP_SYSLOG) on most systems; where it cannot be read,
:class:`KmsgReader` raises ``OSError`` and callers fall back to what they can sample.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KmsgReader", "OomReport", "parse_record"]

KMSG = "/dev/kmsg"
#: One kmsg record is at most this long (the kernel's own limit is 1 KiB of text + prefix).
MAX_RECORD = 8192

_USAGE = re.compile(r"^memory: usage (\d+)kB, limit (\d+)kB")
_STATS_FOR = re.compile(r"^Memory cgroup stats for (.*):\s*$")
_STAT_LINE = re.compile(r"^([a-z_]+) (\d+)$")
_KILLED = re.compile(
    r"Killed process (\d+) \((.*?)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, "
    r"shmem-rss:(\d+)kB"
)
#: memory.stat keys, v1 then v2 spelling, folded into one name each.
STAT_KEYS = {
    "rss": "anon",
    "anon": "anon",
    "cache": "file",
    "file": "file",
    "mapped_file": "mapped",
    "file_mapped": "mapped",
    "shmem": "shmem",
    "swap": "swap",
}


def breakdown(stat: dict[str, int]) -> dict[str, int]:
    """anon, file, mapped, shmem and swap bytes from a v1 or v2 ``memory.stat``."""
    return {name: stat[key] for key, name in STAT_KEYS.items() if key in stat}


@dataclass(frozen=True)
class OomReport:
    """One kill as the kernel reported it; sizes in bytes, ``monotonic`` in seconds."""

    monotonic: float
    pid: int
    command: str
    memcg: str | None = None
    task_memcg: str | None = None
    usage: int | None = None
    limit: int | None = None
    anon_rss: int | None = None
    file_rss: int | None = None
    stat: dict[str, int] = field(default_factory=dict)

    def in_cgroup(self, kernel_path: str) -> bool:
        """Whether the kill happened in the cgroup the kernel calls ``kernel_path`` (or under it)."""
        path = kernel_path.rstrip("/") or "/"
        return any(
            p is not None and (p == path or p.startswith(path.rstrip("/") + "/"))
            for p in (self.memcg, self.task_memcg)
        )

    def as_fields(self) -> dict[str, Any]:
        """The report as timeline mark fields."""
        fields: dict[str, Any] = {"victim_pid": self.pid, "victim_command": self.command}
        if self.usage is not None:
            fields["usage"] = self.usage
        if self.limit is not None:
            fields["limit"] = self.limit
        if self.anon_rss is not None:
            fields["victim_anon_rss"] = self.anon_rss
        if self.stat:
            fields["stat"] = breakdown(self.stat)
        fields["source"] = (
            "kernel log" if self.usage is not None else "kernel log (rate-limited: victim only)"
        )
        return fields


def parse_record(raw: bytes) -> tuple[float, str] | None:
    """(monotonic seconds, message) of one ``/dev/kmsg`` record, or None when it is not one."""
    head, sep, rest = raw.partition(b";")
    if not sep:
        return None
    parts = head.split(b",")
    if len(parts) < 3 or not parts[2].isdigit():
        return None
    message = rest.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    return int(parts[2]) / 1e6, message


class KmsgReader:
    """Reads the OOM reports the kernel logs from now on (earlier records are skipped)."""

    def __init__(self, path: str = KMSG) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._pending: dict[str, Any] = {}
        self._collecting = False

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def read(self) -> list[OomReport]:
        """Every OOM report completed since the last call."""
        reports: list[OomReport] = []
        while self._fd >= 0:
            try:
                raw = os.read(self._fd, MAX_RECORD)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records were overwritten before we read them: go on
                continue
            if not raw:
                break
            record = parse_record(raw)
            if record is not None and (report := self._feed(*record)) is not None:
                reports.append(report)
        return reports

    def _feed(self, at: float, message: str) -> OomReport | None:
        if self._collecting:
            if match := _STAT_LINE.match(message):
                self._pending.setdefault("stat", {})[match[1]] = int(match[2])
                return None
            self._collecting = False
        if "invoked oom-killer:" in message:
            self._pending = {}
        elif match := _USAGE.match(message):
            self._pending["usage"] = int(match[1]) * 1024
            self._pending["limit"] = int(match[2]) * 1024
        elif match := _STATS_FOR.match(message):
            self._pending["stat"] = {}
            self._collecting = True
        elif message.startswith("oom-kill:"):
            pairs = dict(p.split("=", 1) for p in message[9:].split(",") if "=" in p)
            self._pending["memcg"] = pairs.get("oom_memcg")
            self._pending["task_memcg"] = pairs.get("task_memcg")
        elif match := _KILLED.search(message):
            pending, self._pending = self._pending, {}
            return OomReport(
                monotonic=at,
                pid=int(match[1]),
                command=match[2],
                memcg=pending.get("memcg"),
                task_memcg=pending.get("task_memcg"),
                usage=pending.get("usage"),
                limit=pending.get("limit"),
                anon_rss=int(match[4]) * 1024,
                file_rss=int(match[5]) * 1024,
                stat=pending.get("stat", {}),
            )
        return None
