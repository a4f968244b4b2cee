"""Timestamp every OOM kill in a cgroup as the kernel reports it, without polling in a loop.

cgroup v1 announces an OOM through an eventfd registered in ``cgroup.event_control`` against
``memory.oom_control``; cgroup v2 signals a change of ``memory.events`` to inotify. Either way the
notification can arrive a moment before the kill is counted (v1 notifies when the group goes
under OOM, before the victim is chosen), so on each wake-up the watcher re-reads the kernel's
``oom_kill`` counter until it moves, and records one event per kill. A slow re-read every
``fallback_interval`` catches anything a notification missed.
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

__all__ = ["OomEvent", "OomWatcher"]

_SETTLE = 0.2  # how long a wake-up waits for the counter to move (seconds)


@dataclass(frozen=True)
class OomEvent:
    """One kill: wall-clock and monotonic time it was seen, the counter after it, and the target
    spec it belongs to (as the experiment named it: reports label kills with it, whatever the
    backend; ``cgroup`` is the local path, empty for other backends)."""

    at: float
    monotonic: float
    count: int
    cgroup: str
    target: dict[str, Any] = field(default_factory=dict)
    #: Backend detail, e.g. ``{"pod": "shop/orders-a", "container": "orders"}`` for a pod.
    detail: dict[str, Any] = field(default_factory=dict)


class OomWatcher:
    """Watch one cgroup; ``events`` grows by one :class:`OomEvent` per kill, ``on_kill`` is called too."""

    def __init__(
        self,
        group: Cgroup,
        *,
        on_kill: Callable[[OomEvent], None] | None = None,
        fallback_interval: float = 1.0,
        spec: Mapping[str, Any] | None = None,
    ) -> None:
        self.group = group
        self.spec = dict(spec) if spec is not None else group.spec
        self.on_kill = on_kill
        self.fallback_interval = fallback_interval
        self.events: list[OomEvent] = []
        self._count = group.oom_kill_count()
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closers: list[Callable[[], None]] = []

    def __enter__(self) -> OomWatcher:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> OomWatcher:
        source = self._v1_eventfd() if self.group.version == 1 else self._v2_inotify()
        self._thread = threading.Thread(
            target=self._run, args=(source,), name="chaosmem-oomwatch", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for close in reversed(self._closers):
            close()
        self._closers.clear()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = -1

    # -- notification sources: each returns (fd to poll, drain function) --------------------

    def _v1_eventfd(self) -> tuple[int, Callable[[], None]]:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.open(self.group.path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        self._closers += [lambda: os.close(control), lambda: os.close(efd)]
        try:
            with open(self.group.path / "cgroup.event_control", "w") as out:
                out.write(f"{efd} {control}")
        except OSError as exc:
            raise ChaosmemError(
                f"{self.group.path}: cannot register an OOM eventfd: {exc.strerror}"
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
        while True:
            ready = {f for f, _ in poller.poll(self.fallback_interval * 1000)}
            if self._stop_r in ready:
                return
            if fd in ready:
                drain()
            if not self._check(settle=_SETTLE if fd in ready else 0.0):
                return

    def check_now(self) -> None:
        """Record any kill the counter shows that no notification has reported yet."""
        self._check(settle=0.0)

    def _check(self, *, settle: float) -> bool:
        """Record kills the counter shows; returns False once the cgroup is gone."""
        deadline = time.monotonic() + settle
        while True:
            try:
                count = self.group.oom_kill_count()
            except (ChaosmemError, OSError):
                return False
            if count != self._count or time.monotonic() >= deadline:
                break
            time.sleep(0.001)
        now, mono = time.time(), time.monotonic()
        for value in range(self._count + 1, count + 1):
            event = OomEvent(now, mono, value, str(self.group.path), dict(self.spec))
            self.events.append(event)
            if self.on_kill is not None:
                self.on_kill(event)
        self._count = max(self._count, count)
        return True
