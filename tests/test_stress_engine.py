"""The engine on a real memory cgroup: the pace, the plateau, and the blocks it really mapped."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from chaosmem.stress.actions import inject_allocation_stress, stop_allocation_stress
from chaosmem.stress.status import read_blocks, read_status
from chaosmem.targets.cgroup import Cgroup
from tests.stress_support import MI, no_stressor_outlives_the_test, target_of, wait_for

__all__ = ["no_stressor_outlives_the_test"]


def sample_until_hold(group: Cgroup, status: Path, *, after: float) -> list[tuple[float, int]]:
    """Cgroup usage at 10 Hz until the engine has held for ``after`` seconds."""
    samples: list[tuple[float, int]] = []
    held_since: float | None = None
    next_at = time.monotonic()
    while True:
        usage = group.memory_usage()
        now = time.monotonic()
        samples.append((now, usage))
        phase = (read_status(status) or {}).get("phase")
        if phase == "hold" and held_since is None:
            held_since = now
        if held_since is not None and now - held_since >= after:
            return samples
        assert len(samples) < 1200, f"hung: no hold after 1200 samples (phase {phase})"
        next_at += 0.1
        time.sleep(max(0.0, next_at - time.monotonic()))


def status_file(result: dict[str, Any]) -> Path:
    return Path(result["stressors"][0]["status_file"])


def test_ramp_never_runs_ahead_of_the_asked_rate_and_plateaus_at_the_asked_size(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """Growth is paced: at no sample is more charged than ``rate`` x the time since the call.

    How closely the achieved rate follows the asked one is a speed figure, measured by
    ``bench/stress_precision.py`` (goal +-3%); on a loaded machine the engine may fall behind
    its schedule, never ahead of it, so only that side is asserted here.
    """
    size, rate = 200 * MI, 50 * MI
    before = cgroup.memory_usage()
    called = time.monotonic()  # the engine's ramp starts after this, never before
    result = inject_allocation_stress(
        target_of(cgroup), size="200Mi", growth_rate="50Mi/s", hold="60s", configuration=state
    )  # NB: a hold a late sampler can't miss; stopped when the test ends
    status = status_file(result)
    samples = sample_until_hold(cgroup, status, after=0.5)
    plateau = statistics.median(cgroup.memory_usage() for _ in range(4))  # held for 60 s
    # the engine's interpreter and one allocation step are charged on top of the schedule
    slack = 16 * MI + 4 * MI
    ahead = [
        (t - called, u - before) for t, u in samples if u - before > rate * (t - called) + slack
    ]
    assert not ahead, f"charged ahead of 50Mi/s (seconds, bytes): {ahead[:5]}"
    overhead = plateau - before - size
    assert 0 <= overhead <= 16 * MI, f"plateau {plateau / MI:.1f}Mi, overhead {overhead / MI:.1f}Mi"
    final = read_status(status)
    assert final is not None
    assert {"id", "pid", "cgroup", "bytes", "size", "phase", "t"} <= set(final)
    assert final["cgroup"] == str(cgroup.path) and final["size"] == size and final["bytes"] == size
    assert final["pid"] == result["pids"][0] and final["phase"] == "hold"


def maps_of(pid: int) -> dict[int, tuple[int, str]]:
    """start address -> (end address, permissions) of every mapping of ``pid``."""
    found: dict[int, tuple[int, str]] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        found[start] = (end, perms)
    return found


def resident_of(pid: int) -> dict[int, int]:
    """start address -> resident bytes (smaps Rss) of every mapping of ``pid``."""
    rss: dict[int, int] = {}
    start = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start = int(head.split("-")[0], 16)
        elif head == "Rss:":
            rss[start] = int(line.split()[1]) * 1024
    return rss


def test_half_fragmentation_maps_the_asked_mix_of_block_sizes(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    result = inject_allocation_stress(
        target_of(cgroup), size="64Mi", fragmentation=0.5, configuration=state
    )
    status = status_file(result)
    wait_for(lambda: (read_status(status) or {}).get("phase") == "hold", "the engine's hold phase")
    plan = result["plan"]["blocks"][0]
    assert plan["small_share"] == 0.5 and plan["small_blocks"] == 512 and plan["large_blocks"] == 4
    pid = result["pids"][0]
    blocks = read_blocks(status)
    maps, rss = maps_of(pid), resident_of(pid)
    mapped = {"small": 0, "large": 0}
    counts = {"small": 0, "large": 0}
    for address, length, kind in blocks:
        assert maps[address] == (address + length, "rw-p"), "each block is a mapping of its own"
        assert maps[address + length] == (address + length + 4096, "---p"), (
            "followed by a guard page"
        )
        assert rss[address] == length, "every page of the block is resident"
        mapped[kind] += length
        counts[kind] += 1
    assert mapped == {"small": 32 * MI, "large": 32 * MI}
    assert counts == {"small": plan["small_blocks"], "large": plan["large_blocks"]}
    assert {length for _, length, kind in blocks if kind == "small"} == {64 << 10}
    assert {length for _, length, kind in blocks if kind == "large"} == {8 * MI}


def test_fragmented_release_keeps_every_other_block(cgroup: Cgroup, state: dict[str, Any]) -> None:
    result = inject_allocation_stress(
        target_of(cgroup),
        size="64Mi",
        fragmentation=0.5,
        hold="0.2s",
        release="fragmented",
        configuration=state,
    )
    status = status_file(result)
    wait_for(
        lambda: (
            (read_status(status) or {}).get("phase") == "release"
            and (read_status(status) or {}).get("bytes") == 32 * MI
        ),
        "the fragmented release keeping half",
    )
    pid = result["pids"][0]
    maps = maps_of(pid)
    seen = {"small": 0, "large": 0}
    for address, length, kind in read_blocks(status):
        kept = seen[kind] % 2 == 0
        seen[kind] += 1
        assert (maps.get(address) == (address + length, "rw-p")) is kept
    assert cgroup.memory_usage() < 64 * MI  # the freed half went back to the kernel
    stop_allocation_stress(target_of(cgroup), configuration=state)
    assert not cgroup.pids()
