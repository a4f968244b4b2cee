"""Where a run's OOM-kill count of a cgroup starts: one answer for the watcher, probes and timeline.

The kernel's ``oom_kill`` counter counts from the cgroup's creation. Which of those kills are
this run's depends on who made the cgroup and when:

* a cgroup chaosmem created in this run (a service, ``start_service`` or the control's fixtures:
  an open ``service`` ledger entry of this run names it) counts **from 0**: its whole life belongs
  to the run, so a kill before any watch attached is still this run's;
* a cgroup that appeared during the run (the run saw its path absent, or holding another cgroup
  of the same name, earlier) counts from 0 too, for the same reason;
* a cgroup that existed before the run counts from the counter as the run first looked at it
  (the control looks at every target as the run starts): its earlier kills are not this run's.

A cgroup is one *instance*: its directory's (device, inode). A path removed and made again (a
service stopped and started again) is a new instance that counts from 0, and the kills of the
earlier instances at the path are carried, so the run's count for the path never goes down.

The answers live per run in this process (the control, the probes and the timeline share it);
the control drops them when the run ends. A second run on the same state dir starts with none:
a service a first run left running is a pre-existing cgroup to it. The control also listens for
the cgroups chaosmem makes (:func:`announce_created`), so its watch is on a service's cgroup
before the service runs an instruction, and a service started and stopped within one activity
is not missed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmem.ledger import Ledger, current_run
from chaosmem.state import state_dir
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.local import SERVICE_KIND

__all__ = [
    "Baseline",
    "RunKills",
    "announce_created",
    "forget_run",
    "kills_of_run",
    "run_kill_count",
]

logger = logging.getLogger("chaostoolkit")


@dataclass
class Baseline:
    """Where one cgroup instance's count starts in one run.

    ``base`` is the kernel counter value the run's count starts from, ``since`` the monotonic
    time (the kernel log's clock) from which its log's OOM reports of the cgroup are this run's,
    ``carried`` the kills of earlier instances at the same path in this run, ``seen`` the
    highest counter value read so far, and ``why`` says which rule chose ``base``.
    """

    path: str
    identity: tuple[int, int]
    base: int
    since: float
    why: str
    carried: int = 0
    seen: int = 0
    last_look: float = 0.0

    def run_count(self, counter: int) -> int:
        """This run's kills at the path, the kernel's counter of this instance being ``counter``."""
        self.seen = max(self.seen, counter)
        return self.carried + max(0, counter - self.base)


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


class RunKills:
    """The baselines of one run's cgroups (see the module); safe to share between threads."""

    def __init__(self, run: str, state: Path) -> None:
        self.run = run
        self.state = state
        self._lock = threading.Lock()
        self._by_path: dict[str, Baseline] = {}
        self._absent: dict[str, float] = {}
        #: Called with each cgroup chaosmem makes in this run, before anything runs in it.
        self.on_created: list[Callable[[Cgroup], None]] = []

    def note_absent(self, path: str | os.PathLike[str]) -> None:
        """The run looked for a cgroup at ``path`` and found none: one that appears there later
        is this run's from its creation."""
        key = os.path.normpath(os.fspath(path))
        with self._lock:
            if key not in self._by_path and not os.path.isdir(key):
                self._absent[key] = time.monotonic()

    def baseline(self, group: Cgroup) -> Baseline:
        """The baseline of the cgroup instance at ``group.path``, taken on the run's first look.

        Raises ``OSError`` (or :class:`~chaosmem.errors.ChaosmemError`) when the cgroup is gone.
        """
        key = str(group.path)
        with self._lock:
            identity = _identity(group.path)
            now = time.monotonic()
            known = self._by_path.get(key)
            if known is not None and known.identity == identity:
                known.last_look = now
                return known
            carried = known.carried + max(0, known.seen - known.base) if known else 0
            created = self._created_at(key)
            if created is not None:
                base, since, why = 0, created, "created by chaosmem in this run"
            elif known is not None or key in self._absent:
                since = known.last_look if known is not None else self._absent[key]
                base, why = 0, "appeared during this run"
            else:
                base, since, why = group.oom_kill_count(), now, "existed before this run"
            found = Baseline(key, identity, base, since, why, carried, base, now)
            self._by_path[key] = found
            return found

    def count(self, group: Cgroup) -> int:
        """This run's OOM kills in the cgroup at ``group.path`` (its earlier instances' too)."""
        found = self.baseline(group)
        counter = group.oom_kill_count()
        with self._lock:
            return found.run_count(counter)

    def _created_at(self, path: str) -> float | None:
        """When (monotonic) this run's open service ledger entry for ``path`` was recorded, if
        one names it: the entry is written just before the cgroup is made."""
        try:
            entries = Ledger(self.state).read().open(kind=SERVICE_KIND, run=self.run)
        except OSError:
            return None
        for entry in reversed(entries):
            if entry.undo.get("path") == path:
                return max(0.0, time.monotonic() - max(0.0, time.time() - entry.at))
        return None


_RUNS: dict[str, RunKills] = {}
_RUNS_LOCK = threading.Lock()


def kills_of_run(
    run: str, configuration: Mapping[str, Any] | None, *, state: Path | None = None
) -> RunKills:
    """The baselines of ``run`` in this process, made on first use (with the ledger in
    ``state``, else in the configuration's state dir)."""
    with _RUNS_LOCK:
        found = _RUNS.get(run)
        if found is None:
            found = _RUNS[run] = RunKills(run, state or state_dir(configuration))
        return found


def announce_created(group: Cgroup) -> None:
    """Tell the current run (when one runs in this process) that chaosmem has just made
    ``group``, before anything runs in it: its control starts watching it now. Never raises:
    the watch is the control's business, not the service's."""
    run = current_run()
    with _RUNS_LOCK:
        found = _RUNS.get(run) if run is not None else None
    for listener in list(found.on_created) if found is not None else []:
        try:
            listener(group)
        except Exception as exc:
            logger.warning("chaosmem: watching the new cgroup %s failed: %s", group.path, exc)


def forget_run(run: str) -> None:
    """Drop a finished run's baselines."""
    with _RUNS_LOCK:
        _RUNS.pop(run, None)


def run_kill_count(target: Any, configuration: Mapping[str, Any] | None) -> int:
    """The OOM kills a probe or the timeline reports for ``target``: during a run, for a cgroup,
    this run's (see the module); otherwise what the backend counts (the kernel's counter since
    the cgroup's creation; a pod watch's kills during a run)."""
    run = current_run()
    if run is None or not isinstance(target, Cgroup):
        return int(target.oom_kill_count())
    return kills_of_run(run, configuration).count(target)
