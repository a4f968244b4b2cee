"""Limits and OOM kills on the real kernel's cgroup v1 memory controller."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import Ledger
from chaosmem.limits.actions import restore_memory_limit, tighten_memory_limit
from chaosmem.limits.probes import memory_limit, oom_kill_count
from chaosmem.targets.cgroup import Cgroup, LimitBusy
from chaosmem.targets.oomwatch import OomWatcher

HOG = "b = bytearray({mib} << 20); b[::4096] = b'x' * len(b[::4096])"
HOLD = HOG + "; import sys; sys.stdout.write('ok'); sys.stdout.flush(); sys.stdin.read()"


def spec(group: Cgroup) -> dict[str, Any]:
    return {"type": "cgroup", "path": str(group.path)}


def test_64mi_limit_200mi_allocation_is_oom_killed_and_counted(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    assert oom_kill_count(spec(cgroup), state) == 0
    result = tighten_memory_limit(spec(cgroup), limit="64Mi", configuration=state)
    assert result["before"] is None and result["after"] == 64 << 20
    with OomWatcher(cgroup) as watcher:
        proc = cgroup.spawn(["python3", "-c", HOG.format(mib=200)])
        assert proc.wait(timeout=60) == -9
        deadline = time.monotonic() + 5
        while not watcher.events and time.monotonic() < deadline:
            time.sleep(0.01)
    assert oom_kill_count(spec(cgroup), state) >= 1
    assert watcher.events and watcher.events[0].count == 1
    restored = restore_memory_limit(spec(cgroup), configuration=state)
    assert restored["count"] == 1 and memory_limit(spec(cgroup), state) is None
    assert (
        restore_memory_limit(spec(cgroup), configuration=state)["count"] == 0
    )  # twice is harmless


def test_fraction_of_current_limit_and_memsw_follows(cgroup: Cgroup, state: dict[str, Any]) -> None:
    cgroup.set_memory_limit(256 << 20)
    result = tighten_memory_limit(spec(cgroup), fraction="25%", configuration=state)
    assert result["before"] == 256 << 20 and result["after"] == 64 << 20
    if cgroup.has_memsw:
        assert cgroup.memsw_limit() == 64 << 20
    restore_memory_limit(configuration=state)  # no target: every open entry
    assert cgroup.memory_limit() == 256 << 20
    if cgroup.has_memsw:
        assert cgroup.memsw_limit() == 256 << 20


def test_fraction_of_usage_when_unlimited(cgroup: Cgroup, state: dict[str, Any]) -> None:
    proc = cgroup.spawn(
        ["python3", "-c", HOLD.format(mib=64)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.read(2) == b"ok"
        usage = cgroup.memory_usage()
        result = tighten_memory_limit(spec(cgroup), fraction=1.0, configuration=state)
        assert result["before"] is None
        assert abs(result["requested"] - usage) < 8 << 20
    finally:
        proc.kill()
        proc.wait()


def test_below_usage_v1_refuses_with_ebusy_and_nothing_changes(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """v1 cannot reclaim anonymous memory without swap: the kernel answers EBUSY."""
    cgroup.set_memory_limit(512 << 20)
    proc = cgroup.spawn(
        ["python3", "-c", HOLD.format(mib=100)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.read(2) == b"ok"
        with pytest.raises(LimitBusy, match="limit is unchanged") as refused:
            tighten_memory_limit(spec(cgroup), limit="32Mi", configuration=state)
        # sizes a person reads, not raw bytes
        assert "down to 32Mi (usage is " in str(refused.value) and "bytes" not in str(refused.value)
        assert cgroup.memory_limit() == 512 << 20
        assert proc.poll() is None  # nobody was killed
        read = Ledger(Path(state["chaosmem_state_dir"])).read()
        assert read.open() == [] and read.entries[-1].outcome == "not-applied"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"limit": "-64Mi"}, "limit"),
        ({"limit": "64Q"}, "limit"),
        ({"limit": "1"}, "limit"),
        ({}, "limit"),
        ({"limit": "64Mi", "fraction": 0.5}, "limit"),
        ({"fraction": 0}, "fraction"),
        ({"fraction": "150%"}, "fraction"),
    ],
)
def test_bad_arguments(
    cgroup: Cgroup, state: dict[str, Any], kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        tighten_memory_limit(spec(cgroup), configuration=state, **kwargs)
    assert info.value.name == argument
    assert cgroup.memory_limit() is None
