"""Limits and OOM kills on the real kernel: cgroup v1 on this host, cgroup v2 in the VM lane.

The same bodies run on both versions; where the kernels differ on purpose (a limit below usage)
the test says what each one does.
"""

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

pytestmark = pytest.mark.kernel
HANG = 120  # a hang guard, not a speed figure


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
        deadline = time.monotonic() + HANG  # a hang guard: the event comes, however late
        while not watcher.events and time.monotonic() < deadline:
            time.sleep(0.01)
    assert oom_kill_count(spec(cgroup), state) >= 1
    assert watcher.events, f"hung: the watcher saw no OOM event in {HANG} s"
    assert watcher.events[0].count == 1
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
        proc.communicate()  # reaps it and closes its pipes


def test_below_usage_v1_refuses_and_v2_oom_kills(cgroup: Cgroup, state: dict[str, Any]) -> None:
    """Below usage, v1 cannot reclaim anonymous memory without swap and answers EBUSY (nothing
    changes); v2 takes the limit, reclaims, and OOM-kills until usage fits."""
    cgroup.set_memory_limit(512 << 20)
    proc = cgroup.spawn(
        ["python3", "-c", HOLD.format(mib=100)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.read(2) == b"ok"
        if cgroup.version == 1:
            with pytest.raises(LimitBusy, match="limit is unchanged") as refused:
                tighten_memory_limit(spec(cgroup), limit="32Mi", configuration=state)
            # sizes a person reads, not raw bytes
            assert "down to 32Mi (usage is " in str(refused.value)
            assert "bytes" not in str(refused.value)
            assert cgroup.memory_limit() == 512 << 20
            assert proc.poll() is None  # nobody was killed
            read = Ledger(Path(state["chaosmem_state_dir"])).read()
            assert read.open() == [] and read.entries[-1].outcome == "not-applied"
        else:
            result = tighten_memory_limit(spec(cgroup), limit="32Mi", configuration=state)
            assert result["below_usage"] is True and result["after"] == 32 << 20
            assert proc.wait(timeout=60) == -9  # the kernel killed it to fit the new limit
            assert cgroup.oom_kill_count() >= 1
            assert cgroup.memory_usage() <= 32 << 20
            assert len(Ledger(Path(state["chaosmem_state_dir"])).read().open()) == 1
            restore_memory_limit(spec(cgroup), configuration=state)
            assert cgroup.memory_limit() == 512 << 20
    finally:
        proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def test_peak_is_what_the_group_was_charged_at_most(cgroup: Cgroup) -> None:
    """v1 ``memory.max_usage_in_bytes`` and v2 ``memory.peak`` (kernel 5.19+) mean the same."""
    proc = cgroup.spawn(["python3", "-c", HOG.format(mib=96)])
    assert proc.wait(timeout=60) == 0
    peak = cgroup.peak_usage()
    assert peak is not None, "this kernel keeps no peak (v2 before 5.19)"
    assert peak[1] == ("memory.max_usage_in_bytes" if cgroup.version == 1 else "memory.peak")
    assert peak[0] >= 96 << 20 > cgroup.memory_usage()


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
