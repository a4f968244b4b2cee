"""cgroup v2 as a file tree: the shapes a VM run does not make.

What a real cgroup v2 kernel does (limits, memory.events and the inotify watcher, memory.peak, a
limit below usage OOM-killing, services, stress, the control's restore) is tested by the
``kernel`` tests, which ``make test-v2`` runs on Debian's kernel under qemu. These tests keep
what that lane cannot make: a v2 hierarchy reached through another mount table
(``$CHAOSMEM_MOUNTINFO``, as in containers that mount the host's cgroupfs elsewhere) on a host
whose memory controller is on v1, and counters a test can set to any value.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chaosmem.limits.actions import restore_memory_limit, tighten_memory_limit
from chaosmem.limits.probes import memory_limit, memory_usage, oom_kill_count
from chaosmem.rollback import rollback
from chaosmem.targets import resolve_target
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.oomwatch import OomWatcher
from tests.conftest import V2_EVENTS, make_v2_group


def test_v2_is_detected_and_read(v2_root: Path, state: dict[str, Any]) -> None:
    group = make_v2_group(v2_root / "orders", current=300 << 20)
    target = {"type": "cgroup", "path": str(group)}
    resolved = resolve_target(target)
    assert isinstance(resolved, Cgroup) and resolved.version == 2
    assert memory_limit(target, state) is None
    assert memory_usage(target, state) == 300 << 20
    assert oom_kill_count(target, state) == 0


def test_v2_tighten_below_usage_is_accepted_and_restored(
    v2_root: Path, state: dict[str, Any]
) -> None:
    """v2 takes a limit below usage (the kernel then reclaims and OOM-kills); v1 would refuse."""
    group = make_v2_group(v2_root / "orders", current=300 << 20, limit="1073741824")
    target = {"type": "cgroup", "path": str(group)}
    result = tighten_memory_limit(target, limit="256Mi", configuration=state)
    assert (
        result["before"] == 1 << 30
        and result["after"] == 256 << 20
        and result["below_usage"] is True
    )
    assert (group / "memory.max").read_text().strip() == str(256 << 20)
    restore_memory_limit(target, configuration=state)
    assert (group / "memory.max").read_text().strip() == str(1 << 30)


def test_v2_unlimited_restores_to_max_after_a_crash(v2_root: Path, state: dict[str, Any]) -> None:
    group = make_v2_group(v2_root / "orders")
    tighten_memory_limit({"type": "cgroup", "path": str(group)}, limit="64Mi", configuration=state)
    steps = rollback(Path(state["chaosmem_state_dir"]))  # what `chaosmem rollback` does
    assert [s.ok for s in steps] == [True]
    assert (group / "memory.max").read_text().strip() == "max"


def test_v2_watcher_timestamps_kills_from_memory_events(v2_root: Path) -> None:
    group = Cgroup.at(make_v2_group(v2_root / "orders"))
    with OomWatcher(group, fallback_interval=30) as watcher:
        time.sleep(0.05)
        (group.path / "memory.events").write_text(
            V2_EVENTS.replace("oom 0", "oom 2").replace("oom_kill 0", "oom_kill 2")
        )
        deadline = time.monotonic() + 5
        while len(watcher.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [e.count for e in watcher.events] == [1, 2]
    assert group.oom_kill_count() == 2


def test_v2_child_delegates_the_memory_controller(v2_root: Path) -> None:
    parent = Cgroup.at(make_v2_group(v2_root / "ci"))
    parent.child("svc")
    assert (parent.path / "cgroup.subtree_control").read_text() == "+memory"
    assert (parent.path / "svc").is_dir()
