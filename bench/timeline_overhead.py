"""CPU the timeline recorder costs, as a share of one core at the default 1 s interval.

Samples a real memory cgroup (when this machine has a writable v1 controller; else none), two
stressor files and a replay writing one line per tick, for a few hundred ticks at a fast interval,
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

from tests.cgroup_v1 import ChildCgroup, own_memory_cgroup  # noqa: E402

from chaosmem.timeline import Recorder  # noqa: E402

TICKS = 100
INTERVAL = 0.05


def main() -> int:
    cgroup = ChildCgroup(512 << 20) if own_memory_cgroup() is not None else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "state"
            (state / "stress").mkdir(parents=True)
            for name in ("a", "b"):
                (state / "stress" / f"{name}.json").write_text(json.dumps({"bytes": 64 << 20}))
            replay = state / "replays" / "r1"
            replay.mkdir(parents=True)
            (state / "replays" / "latest").write_text("r1")
            targets = [{"type": "cgroup", "path": str(cgroup.path)}] if cgroup else []
            recorder = Recorder(
                directory=Path(tmp) / "run",
                interval=INTERVAL,
                targets=targets,
                configuration={"chaosmem_state_dir": str(state)},
                resolve=(lambda _spec, _config: cgroup) if cgroup else None,  # type: ignore[arg-type,return-value]
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
        if cgroup:
            cgroup.remove()
    per_sample = recorder.cpu_seconds / recorder.samples
    share = per_sample / 1.0
    print(
        f"timeline_overhead: {recorder.samples} samples, {per_sample * 1e6:.0f} µs CPU each "
        f"-> {share * 100:.3f}% of a core at the default 1 s interval"
        f" ({'with' if cgroup else 'without'} a cgroup target)"
    )
    return 0 if share < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
