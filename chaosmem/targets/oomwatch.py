"""Timestamp every OOM kill in a cgroup as the kernel reports it, without polling in a loop.

cgroup v1 announces an OOM through an eventfd registered in ``cgroup.event_control`` against
``memory.oom_control``; cgroup v2 signals a change of ``memory.events`` to inotify. Either way the
notification can arrive a moment before the kill is counted (v1 notifies when the group goes
under OOM, before the victim is chosen), so on each wake-up the watcher re-reads the kernel's
``oom_kill`` counter until it moves, and records one event per kill. A slow re-read every
``fallback_interval`` catches anything a notification missed.

Where the count starts is the run's :class:`~chaosmem.targets.oombase.Baseline` (a cgroup
chaosmem created in this run counts from 0, one that existed before from the run's first look);
without one, from the counter when the watcher is made. The first look comes at once when the
watch starts, so kills between the baseline and the watch (a service OOM-killed before the
control attached) are recorded then, with the kernel's reports of them when its log still
holds them.

Each event carries what the kernel knew at the kill when its log can be read
(:mod:`chaosmem.targets.kmsg`): the kernel's own time of the kill, the cgroup's usage and limit
then, its ``memory.stat`` breakdown, and the victim's pid and command. Without the log, the
event says so (``"source": "sampled after the kill"``) and carries the cgroup's ``memory.stat``
and the processes it still holds, read when the kill was seen.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from inotify_simple import INotify, flags

from chaosmem.errors import ChaosmemError
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.kmsg import KmsgReader, OomReport, breakdown
from chaosmem.targets.mounts import find_mount
from chaosmem.targets.oombase import Baseline

__all__ = ["OomEvent", "OomWatcher"]

_SETTLE = 0.2  # how long a wake-up waits for the counter to move (seconds)
_REPORT_WAIT = 0.5  # how long a seen kill waits for the kernel's report in its log (seconds)


@dataclass(frozen=True)
class OomEvent:
    """One kill: its time (the kernel's, when its log could be read; else when it was seen), in
    wall-clock and monotonic seconds, the counter after it, the target spec it belongs to (as the
    experiment named it: reports label kills with it, whatever the backend; ``cgroup`` is the
    local path, empty for other backends), ``detail`` (for a cgroup: see the module), and
    ``run_count``, this run's kills in the target so far (for a cgroup, from its baseline;
    None where ``count`` already is the run's)."""

    at: float
    monotonic: float
    count: int
    cgroup: str
    target: dict[str, Any] = field(default_factory=dict)
    #: Backend detail, e.g. ``{"pod": "shop/orders-a", "container": "orders"}`` for a pod; for a
    #: cgroup what the kernel reported at the kill (see the module).
    detail: dict[str, Any] = field(default_factory=dict)
    run_count: int | None = None


def kernel_path(group: Cgroup) -> str | None:
    """The cgroup's path as the kernel prints it (relative to its hierarchy's root)."""
    mount = group.mount or find_mount(group.path)
    if mount is None:
        return None
    try:
        relative = group.path.relative_to(mount.mountpoint).as_posix()
    except ValueError:
        return None
    joined = mount.root.rstrip("/") + ("" if relative == "." else "/" + relative)
    return joined or "/"


class OomWatcher:
    """Watch one cgroup; ``events`` grows by one :class:`OomEvent` per kill, ``on_kill`` is called too.

    Every kill is recorded once, whoever looks: the watching thread and :meth:`check_now` take
    the same lock to move the counter, and ``on_kill`` is called outside it, in kill order per
    caller. A failed :meth:`start` leaves nothing open.
    """

    def __init__(
        self,
        group: Cgroup,
        *,
        on_kill: Callable[[OomEvent], None] | None = None,
        fallback_interval: float = 1.0,
        spec: Mapping[str, Any] | None = None,
        baseline: Baseline | None = None,
    ) -> None:
        self.group = group
        self.spec = dict(spec) if spec is not None else group.spec
        self.on_kill = on_kill
        self.fallback_interval = fallback_interval
        self.events: list[OomEvent] = []
        if baseline is None:
            count = group.oom_kill_count()
            info = os.stat(group.path)
            baseline = Baseline(
                str(group.path),
                (info.st_dev, info.st_ino),
                count,
                time.monotonic(),
                "counted from the watch",
                seen=count,
            )
        self.baseline = baseline
        self._count = baseline.base
        self._lock = threading.Lock()
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None
        self._closers: list[Callable[[], None]] = []
        self._kernel_path = kernel_path(group)
        self._pids: set[int] = set()
        self._earlier_pids: set[int] = set()
        self._reports: list[OomReport] = []
        self._kmsg: KmsgReader | None = None

    def __enter__(self) -> OomWatcher:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> OomWatcher:
        """Start watching; raises :class:`ChaosmemError` (with every descriptor closed) when the
        kernel will not notify us."""
        if self._thread is not None:
            return self
        try:
            self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
            self._closers += [lambda: os.close(self._stop_r), lambda: os.close(self._stop_w)]
            try:
                self._kmsg = KmsgReader(since=self.baseline.since)
                self._closers.append(self._kmsg.close)
            except OSError:
                pass  # NB: no kernel log (not root, or a container without it): sampled details
            source = self._v1_eventfd() if self.group.version == 1 else self._v2_inotify()
            self._thread = threading.Thread(
                target=self._run, args=(source,), name="chaosmem-oomwatch", daemon=True
            )
            self._thread.start()
        except BaseException as exc:
            self._close()
            if isinstance(exc, OSError):
                raise ChaosmemError(
                    f"{self.group.path}: cannot watch for OOM kills: {exc.strerror or exc}"
                ) from None
            raise
        return self

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the thread (waiting at most ``timeout``) and close what start() opened."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            thread.join(timeout=timeout)
            if thread.is_alive():
                # NB: stuck in on_kill; its descriptors stay open until it returns and sees the
                # stop byte, rather than being closed under it (and reused by someone else).
                return
        self._close()

    def _close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(OSError):
                close()
        self._closers.clear()
        self._stop_r = self._stop_w = -1

    # -- notification sources: each returns (fd to poll, drain function) --------------------

    def _v1_eventfd(self) -> tuple[int, Callable[[], None]]:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._closers.append(lambda: os.close(efd))
        control = os.open(self.group.path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        self._closers.append(lambda: os.close(control))
        try:
            with open(self.group.path / "cgroup.event_control", "w") as out:
                out.write(f"{efd} {control}")
        except OSError as exc:
            raise ChaosmemError(
                f"{self.group.path}: cannot register an OOM eventfd: {exc.strerror or exc}"
            ) from None

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(efd)

        return efd, drain

    def _v2_inotify(self) -> tuple[int, Callable[[], None]]:
        notify = INotify()
        self._closers.append(notify.close)
        notify.add_watch(str(self.group.path / "memory.events"), flags.MODIFY)
        return notify.fileno(), lambda: notify.read(timeout=0)

    # -- the watching thread -----------------------------------------------------------------

    def _run(self, source: tuple[int, Callable[[], None]]) -> None:
        fd, drain = source
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        # NB: a first look at once: kills since the baseline (before the watch) are not left
        # for the first notification or the fallback interval.
        if not self._check(settle=0.0):
            return
        while True:
            ready = {f for f, _ in poller.poll(self.fallback_interval * 1000)}
            if self._stop_r in ready:
                return
            if fd in ready:
                drain()
            if not self._check(settle=_SETTLE if fd in ready else 0.0):
                return

    def count_now(self) -> int | None:
        """The kernel's counter now, or None when the cgroup is gone; records nothing."""
        try:
            return self.group.oom_kill_count()
        except (ChaosmemError, OSError):
            return None

    def check_now(self, *, at_least: int | None = None) -> None:
        """Record any kill the counter shows that no notification has reported yet.

        ``at_least`` is a count read earlier (:meth:`count_now`), for a cgroup that may be gone
        by now: the control reads it before the restore removes a service's cgroup.
        """
        self._check(settle=0.0, at_least=at_least)

    def _check(self, *, settle: float, at_least: int | None = None) -> bool:
        """Record kills the counter shows; returns False once the cgroup is gone."""
        self._remember_pids()
        deadline = time.monotonic() + settle
        while True:
            count = self.count_now()
            if count is None or count != self._count or time.monotonic() >= deadline:
                break
            time.sleep(0.001)
        if count is None and at_least is None:
            return False
        seen = max(c for c in (count, at_least) if c is not None)
        now, mono = time.time(), time.monotonic()
        with self._lock:
            values = range(self._count + 1, seen + 1)
            reports = self._kernel_reports(len(values)) if values else []
            sampled = self._sampled() if len(reports) < len(values) else {}
            new: list[OomEvent] = []
            for index, value in enumerate(values):
                cgroup, spec = str(self.group.path), dict(self.spec)
                run_count = self.baseline.run_count(value)
                if index < len(reports):
                    report = reports[index]
                    # NB: the kernel stamps its log with CLOCK_MONOTONIC, as time.monotonic() reads.
                    at_mono = report.monotonic
                    at = now - (mono - at_mono)
                    event = OomEvent(
                        at, at_mono, value, cgroup, spec, report.as_fields(), run_count
                    )
                else:
                    event = OomEvent(now, mono, value, cgroup, spec, dict(sampled), run_count)
                new.append(event)
            self._count = max(self._count, seen)
            self.events.extend(new)
        if self.on_kill is not None:
            for event in new:
                self.on_kill(event)
        return count is not None

    def _kernel_reports(self, wanted: int) -> list[OomReport]:
        """The kernel's reports of this cgroup's ``wanted`` newest kills (fewer if its log is
        unreadable or they do not come within a moment: the counter moves just before the
        kernel prints the victim)."""
        if self._kmsg is None:
            return []
        deadline = time.monotonic() + _REPORT_WAIT
        while True:
            self._reports += [r for r in self._kmsg.read() if self._ours(r)]
            if len(self._reports) >= wanted or time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        taken, self._reports = self._reports[:wanted], self._reports[wanted:]
        return taken

    def _remember_pids(self) -> None:
        """The group's processes now: on v1 the wake-up comes while the group is under OOM,
        before the victim dies, so its pid is among them."""
        with contextlib.suppress(ChaosmemError, OSError, ValueError):
            current = set(self.group.pids())
            self._pids, self._earlier_pids = current, self._pids

    def _ours(self, report: OomReport) -> bool:
        """Whether the kill is in this group; the kernel rate-limits the part of its report
        that names the cgroup (about 10 per 5 s), so a report without it is ours when its
        victim was one of the group's processes."""
        if report.memcg is not None or report.task_memcg is not None:
            return self._kernel_path is not None and report.in_cgroup(self._kernel_path)
        return report.pid in self._pids or report.pid in self._earlier_pids

    def _sampled(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"source": "sampled after the kill"}
        with contextlib.suppress(ChaosmemError, OSError, ValueError):
            fields["stat"] = breakdown(self.group.stat())
            fields["limit"] = self.group.memory_limit()
        return fields
