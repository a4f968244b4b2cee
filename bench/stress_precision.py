"""How exactly the stressor follows its growth rate and size, and what holding memory costs.

For 10, 50 and 200 Mi/s it samples a real cgroup's usage at 10 Hz, fits a line by least squares
to the middle 70% of the ramp (by value), and prints achieved/asked rate; the plateau minus the
usage just before the ramp (the engine's interpreter excluded) gives final/asked size. Then it
holds 1Gi for 10 s and prints the engine's CPU (utime+stime from /proc/PID/stat) as a share of
one core. Goals: rate within +-3%, size within +-1%, holding CPU under 2%.

    .venv/bin/python bench/stress_precision.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaosmem.stress.actions import inject_allocation_stress, stop_allocation_stress
from chaosmem.stress.status import read_status
from chaosmem.targets.cgroup import Cgroup

MI = 1 << 20


def slope(points: list[tuple[float, int]]) -> float:
    mean_t = statistics.fmean(t for t, _ in points)
    mean_u = statistics.fmean(u for _, u in points)
    num = sum((t - mean_t) * (u - mean_u) for t, u in points)
    return num / sum((t - mean_t) ** 2 for t, _ in points)


def engine_started(status: Path) -> bool:
    """The engine's own first status (the supervisor's has no ``elapsed``)."""
    return "elapsed" in (read_status(status) or {})


def measure_ramp(group: Cgroup, config: dict[str, Any], *, rate_mi: int, size_mi: int) -> str:
    before = group.memory_usage()
    result = inject_allocation_stress(
        {"type": "cgroup", "path": str(group.path)},
        size=f"{size_mi}Mi",
        growth_rate=f"{rate_mi}Mi/s",
        hold="2s",
        configuration=config,
    )
    status = Path(result["stressors"][0]["status_file"])
    while not engine_started(status):
        time.sleep(0.002)
    baseline = group.memory_usage()
    samples: list[tuple[float, int]] = []
    held_at: float | None = None
    next_at = time.monotonic()
    while held_at is None or time.monotonic() - held_at < 0.6:
        usage = group.memory_usage()
        samples.append((time.monotonic(), usage))
        if held_at is None and (read_status(status) or {}).get("phase") == "hold":
            held_at = time.monotonic()
        next_at += 0.1
        time.sleep(max(0.0, next_at - time.monotonic()))
    stop_allocation_stress({"type": "cgroup", "path": str(group.path)}, configuration=config)
    size, rate = size_mi * MI, rate_mi * MI
    plateau = statistics.median(u for _, u in samples[-5:])
    middle = [(t, u) for t, u in samples if baseline + 0.15 * size <= u <= baseline + 0.85 * size]
    achieved = slope(middle)
    return (
        f"rate {rate_mi:>3} Mi/s  size {size_mi:>4} Mi: achieved/asked rate {achieved / rate:.4f} "
        f"({achieved / MI:.2f} Mi/s over {len(middle)} samples), final/asked size "
        f"{(plateau - baseline) / size:.4f}, engine overhead {(baseline - before) / MI:.1f} Mi"
    )


def measure_hold(group: Cgroup, config: dict[str, Any], *, seconds: float) -> str:
    result = inject_allocation_stress(
        {"type": "cgroup", "path": str(group.path)}, size="1Gi", configuration=config
    )
    status = Path(result["stressors"][0]["status_file"])
    while (read_status(status) or {}).get("phase") != "hold":
        time.sleep(0.05)
    pid = result["pids"][0]
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    start_cpu, start = cpu(), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu() - start_cpu, time.monotonic() - start
    held = group.memory_usage()
    stop_allocation_stress({"type": "cgroup", "path": str(group.path)}, configuration=config)
    return (
        f"hold 1Gi for {wall:.1f} s: CPU {used:.3f} s = {100 * used / wall:.2f}% of one core "
        f"(cgroup usage {held / MI:.0f} Mi)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    args = parser.parse_args()
    group = Cgroup.of_process("self").child(f"bench-stress-{uuid.uuid4().hex[:8]}")
    try:
        with tempfile.TemporaryDirectory() as state:
            config = {"chaosmem_state_dir": state}
            for rate_mi, size_mi in ((10, 200), (50, 250), (200, 1000)):
                print(measure_ramp(group, config, rate_mi=rate_mi, size_mi=size_mi), flush=True)
            print(measure_hold(group, config, seconds=args.hold_seconds), flush=True)
    finally:
        group.remove(grace=1.0)


if __name__ == "__main__":
    main()
