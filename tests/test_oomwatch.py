"""The OOM watcher on the real kernel: every kill once, and a failed start leaves nothing open."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.control import WATCH_ATTEMPTS, _Run
from chaosmem.errors import ChaosmemError
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.oomwatch import OomEvent, OomWatcher
from chaosmem.timeline import Recorder
from tests.conftest import make_v2_group

KILLS = 200
#: dd reads into a 64 MiB buffer, touching every page: far above the 16 MiB limit, always killed.
KILLED = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_200_kills_with_a_slow_callback_are_200_marks(cgroup: Cgroup) -> None:
    cgroup.set_memory_limit(16 << 20)
    marks: list[OomEvent] = []

    def slow(kill: OomEvent) -> None:
        time.sleep(0.005)  # a recorder writing to a slow disk
        marks.append(kill)

    before = cgroup.oom_kill_count()
    watcher = OomWatcher(cgroup, on_kill=slow, fallback_interval=0.05).start()
    done = threading.Event()

    def kill_them() -> None:
        try:
            for _ in range(KILLS // 20):
                procs = [
                    cgroup.spawn(KILLED, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    for _ in range(20)
                ]
                assert [p.wait(timeout=60) for p in procs] == [-9] * 20
        finally:
            done.set()

    killer = threading.Thread(target=kill_them)
    killer.start()
    while not done.is_set():  # a second looker, as the control's last look used to be
        watcher.check_now()
        time.sleep(0.002)
    killer.join()
    watcher.stop()
    watcher.check_now()
    assert cgroup.oom_kill_count() - before == KILLS
    assert sorted(m.count for m in marks) == list(range(before + 1, before + KILLS + 1))
    assert len(watcher.events) == KILLS


def test_100_failed_starts_leak_no_descriptor(own_cgroup: Cgroup) -> None:
    group = own_cgroup.child(f"test-gone-{os.getpid()}")
    watchers = [OomWatcher(group) for _ in range(100)]
    group.remove(grace=1)  # gone between the watcher's making and its start: a real race
    fds = open_fds()
    for watcher in watchers:
        with pytest.raises(ChaosmemError, match="OOM"):
            watcher.start()
        watcher.stop()  # harmless after a failed start
    assert open_fds() == fds


def test_v2_watch_that_cannot_be_added_is_an_error_and_leaks_nothing(v2_root: Path) -> None:
    group = Cgroup.at(make_v2_group(v2_root / "orders"))
    watchers = [OomWatcher(group) for _ in range(100)]
    (group.path / "memory.events").unlink()
    fds = open_fds()
    for watcher in watchers:
        with pytest.raises(ChaosmemError, match="cannot watch"):
            watcher.start()
    assert open_fds() == fds


def test_the_control_gives_up_on_a_watcher_after_a_few_attempts(
    tmp_path: Path, v2_root: Path, state: dict[str, Any]
) -> None:
    group = make_v2_group(v2_root / "orders")
    (group / "memory.events").unlink()
    (group / "memory.events").mkdir()  # unreadable as a file: the watcher cannot be made
    spec = {"type": "cgroup", "path": str(group)}
    recorder = Recorder(directory=tmp_path / "run", targets=[spec], configuration=state, sources=[])
    run = _Run("r", tmp_path / "state", tmp_path / "run", state, [spec], recorder)
    fds = open_fds()
    for _ in range(100):  # after every activity of a long experiment
        run.watch_targets()
    assert run.watch_failures == {json.dumps(spec, sort_keys=True): WATCH_ATTEMPTS}
    assert not run.watchers and open_fds() == fds
