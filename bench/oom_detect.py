"""Latency from the kernel's OOM kill to the watcher's record, over at least 50 real kills.

The reference is the moment the parent's waitpid() returns for the killed child: the earliest a
supervisor could know. A negative figure means the watcher recorded the kill before waitpid
returned (the eventfd fires while the victim is still being torn down). Goal: p99 <= 50 ms.

    .venv/bin/python bench/oom_detect.py [--kills 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.oomwatch import OomWatcher

HOG = "b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096])"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=50)
    args = parser.parse_args()
    group = Cgroup.of_process("self").child(f"bench-oom-{uuid.uuid4().hex[:8]}")
    latencies: list[float] = []
    try:
        group.set_memory_limit(32 << 20)
        with OomWatcher(group) as watcher:
            for i in range(args.kills):
                proc = group.spawn([sys.executable, "-S", "-c", HOG])
                proc.wait()
                reaped = time.monotonic()
                deadline = reaped + 2
                while len(watcher.events) <= i and time.monotonic() < deadline:
                    time.sleep(0.0005)
                if len(watcher.events) <= i:
                    print(f"kill {i}: not recorded within 2 s", file=sys.stderr)
                    continue
                latencies.append((watcher.events[i].monotonic - reaped) * 1000)
    finally:
        group.remove()
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"oom_detect: kills={len(latencies)}/{args.kills} p50={p50:.2f}ms p99={p99:.2f}ms "
        f"max={latencies[-1]:.2f}ms (record - waitpid; goal p99 <= 50ms)"
    )


if __name__ == "__main__":
    main()
