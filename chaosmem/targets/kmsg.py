"""The kernel's own account of each OOM kill, read from its log (``/dev/kmsg``).

Why the log and not the cgroup's files: by the time a watcher wakes up, the victim is dead and
its memory freed, so ``memory.usage_in_bytes`` and ``memory.stat`` describe the aftermath. The
kernel prints its OOM report *at* the kill: the usage and limit of the cgroup that hit its limit,
that cgroup's ``memory.stat``, the victim's pid, command and rss, each record stamped with the
kernel's monotonic clock (microseconds). The reports of two OOMs never interleave (the kernel
holds ``oom_lock`` while it prints one). The kernel rate-limits the header of its reports (the
usage, ``memory.stat`` and the cgroup's name; about 10 per 5 s), never the victim's line: in a
burst of kills some reports name only the victim. ``memory.stat`` comes in two shapes: one
line per record (kernels since 6.5), or all of it in one record (older ones, e.g. Debian 12's
6.1); v1 spells its keys ``rss``/``cache``, v2 ``anon``/``file`` (see :func:`stat_lines`).

Reading ``/dev/kmsg`` needs root (or CAP_SYSLOG) on most systems; where it cannot be read,
:class:`KmsgReader` raises ``OSError`` and callers fall back to what they can sample.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KmsgReader", "OomReport", "ReportParser", "parse_record", "stat_lines"]

KMSG = "/dev/kmsg"
#: One kmsg record is at most this long (the kernel's own limit is 1 KiB of text + prefix).
MAX_RECORD = 8192

_USAGE = re.compile(r"^memory: usage (\d+)kB, limit (\d+)kB")
_STATS_FOR = re.compile(r"^Memory cgroup stats for (.*):\s*$")
_STAT_LINE = re.compile(r"^([a-z][a-z0-9_]{0,63}) (\d{1,20})$")
#: How ``/dev/kmsg`` shows a newline inside one record (it escapes every control character).
_NEWLINE = "\\x0a"
#: A record's text is cut at this many bytes (the kernel's LOG_LINE_MAX, 1024 - 32): a record
#: this long may end mid-line, so its last line is not trusted.
LOG_LINE_MAX = 992
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


def stat_lines(message: str) -> dict[str, int]:
    """The ``memory.stat`` lines in one record of the kernel's OOM report, in either shape.

    Kernels since 6.5 print each line as its own record (``anon 123``); older ones (Debian 12's
    6.1, the cgroup v2 lane) print the whole ``memory.stat`` as one record, which ``/dev/kmsg``
    shows with its newlines escaped (``anon 123\\x0afile 456\\x0a...``) and which the kernel cuts
    at :data:`LOG_LINE_MAX` bytes, possibly mid-number: the last line of such a record is
    dropped. Empty when the record is not ``memory.stat`` lines (the report has moved on).
    """
    pieces = message.split(_NEWLINE)
    if len(pieces) > 1:
        text_bytes = len(message.encode()) - 3 * message.count("\\x")
        if text_bytes >= LOG_LINE_MAX - 1:
            pieces.pop()
    found: dict[str, int] = {}
    for piece in pieces:
        if match := _STAT_LINE.match(piece.strip()):
            found[match[1]] = int(match[2])
        elif not found and piece.strip():
            return {}  # NB: only the first line decides: the report has moved on
    return found


class ReportParser:
    """Folds the records of the kernel's OOM reports, in log order, into :class:`OomReport` values."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] = {}
        self._collecting = False

    def feed(self, at: float, message: str) -> OomReport | None:
        """Take the next record's (monotonic seconds, message); a report once it is complete."""
        if self._collecting:
            if stat := stat_lines(message):
                self._pending.setdefault("stat", {}).update(stat)
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


class KmsgReader:
    """Reads the OOM reports the kernel logs from now on (earlier records are skipped), or, with
    ``since`` (seconds of the kernel's monotonic clock, as :func:`time.monotonic` reads it), the
    reports of kills from then on that the log still holds: a cgroup chaosmem created counts
    from its creation, so the kernel's reports of kills before its watch began are wanted too.
    """

    def __init__(self, path: str = KMSG, *, since: float | None = None) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            # NB: SEEK_SET 0 is the oldest record the log still holds; SEEK_END the next one.
            os.lseek(self._fd, 0, os.SEEK_END if since is None else os.SEEK_SET)
        except OSError:
            os.close(self._fd)
            raise
        self._since = since
        self._parser = ReportParser()

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
            report = self._parser.feed(*record) if record is not None else None
            if report is not None and (self._since is None or report.monotonic >= self._since):
                reports.append(report)
        return reports
