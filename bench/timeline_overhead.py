"""CPU the timeline recorder costs, as a share of one core at the default 1 s interval.

Samples a real child memory cgroup of this process's own (resolved as a target spec, as in a
run), two stressor files and a replay writing one line per tick, for a few hundred ticks at a fast interval,
and reads the sampler thread's own CPU time (``time.thread_time``, which the recorder keeps in
``cpu_seconds``). The share at 1 s is the CPU per sample divided by one second. Goal: under 1%.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaosmem.targets.cgroup import Cgroup  # noqa: E402
from chaosmem.timeline import Recorder  # noqa: E402

TICKS = 100
INTERVAL = 0.05


def main() -> int:
    cgroup = Cgroup.of_process("self").child(f"bench-timeline-{time.monotonic_ns()}")
    cgroup.set_memory_limit(512 << 20)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "state"
            (state / "stress").mkdir(parents=True)
            for name in ("a", "b"):
                (state / "stress" / f"{name}.json").write_text(json.dumps({"bytes": 64 << 20}))
            replay = state / "replays" / "r1"
            replay.mkdir(parents=True)
            (state / "replays" / "latest").write_text("r1")
            targets = [cgroup.spec]
            recorder = Recorder(
                directory=Path(tmp) / "run",
                interval=INTERVAL,
                targets=targets,
                configuration={"chaosmem_state_dir": str(state)},
            )
            recorder.start()
            with (replay / "seconds.jsonl").open("a") as seconds:
                for _ in range(TICKS):
                    line = {
                        "t": time.time(),
                        "sent": 500,
                        "completed": 498,
                        "status": {"200": 490, "503": 8},
                        "errors": {},
                        "lag_p99_ms": 2.5,
                    }
                    seconds.write(json.dumps(line) + "\n")
                    seconds.flush()
                    time.sleep(INTERVAL)
            recorder.stop()
    finally:
        cgroup.remove()
    per_sample = recorder.cpu_seconds / recorder.samples
    share = per_sample / 1.0
    print(
        f"timeline_overhead: {recorder.samples} samples, {per_sample * 1e6:.0f} µs CPU each "
        f"-> {share * 100:.3f}% of a core at the default 1 s interval"
        " (with a cgroup target, two stressors and a replay)"
    )
    return 0 if share < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
