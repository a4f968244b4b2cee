"""Render a journal whose timeline holds 10,000 samples (2h46m at 1 s); print seconds and bytes.

Two figures: the render in this process (journal -> HTML), and the whole ``chaosmem report``
command as a user runs it (interpreter start, imports, reading the journal, writing the file),
min/median/max over 3 rounds. Goal: render under 1 s and under 1 MB of HTML. The journal is synthetic but shaped like a real one (a
Chaos Toolkit journal with chaosmem's extension): one target's usage climbing in waves against a
limit tightened to 512Mi with three OOM kills, a stressor, replayed traffic with 503 bursts,
replicas scaling out, and Go memstats. Writes the report to reports/bench.html for a look.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaosmem.report import build_report, render  # noqa: E402

SAMPLES = 10_000
MIB = 1 << 20


def journal(start: float) -> dict[str, object]:
    rng = random.Random(7)
    timeline: list[dict[str, object]] = []
    kills = 0
    for i in range(SAMPLES):
        t = start + i
        usage = (300 + 150 * math.sin(i / 400) + rng.random() * 40) * MIB
        if i in (2500, 5100, 7700):
            kills += 1
            timeline.append(
                {
                    "t": t - 0.4,
                    "kind": "mark",
                    "event": "oom-kill",
                    "target": "orders",
                    "count": kills,
                }
            )
        status = {
            "200": 480 + rng.randrange(20),
            "503": rng.randrange(40) if usage > 420 * MIB else 0,
        }
        timeline.append(
            {
                "t": t,
                "kind": "sample",
                "targets": [
                    {
                        "name": "orders",
                        "usage": int(usage),
                        "limit": 512 * MIB if i > 60 else 1024 * MIB,
                        "oom_kills": kills,
                    }
                ],
                "stress": {"bytes": min(i, 3000) * 40 * 1024, "stressors": 1},
                "traffic": {
                    "replay": "r1",
                    "seconds": 1,
                    "sent": 500,
                    "completed": sum(status.values()),
                    "status": status,
                    "errors": {},
                    "lag_p99_ms": 2 + rng.random(),
                },
                "replicas": {"desired": 2 + i // 3000, "ready": 2 + max(0, i - 90) // 3000},
                "go": {
                    "HeapAlloc": int(usage * 0.7),
                    "HeapInuse": int(usage * 0.8),
                    "Sys": int(usage * 1.1),
                },
            }
        )
    timeline.append(
        {
            "t": start + SAMPLES,
            "kind": "stats",
            "samples": SAMPLES,
            "cpu_seconds": 1.2,
            "interval": 1.0,
        }
    )
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start))
    probe = {
        "type": "probe",
        "name": "orders-healthy",
        "tolerance": True,
        "provider": {
            "type": "python",
            "module": "os.path",
            "func": "exists",
            "arguments": {"path": "/"},
        },
    }
    state = {
        "steady_state_met": True,
        "probes": [
            {
                "activity": probe,
                "output": True,
                "status": "succeeded",
                "start": iso,
                "end": iso,
                "duration": 0.01,
                "tolerance_met": True,
            }
        ],
    }
    action = {
        "type": "action",
        "name": "tighten-to-512Mi",
        "provider": {
            "type": "python",
            "module": "chaosmem.limits.actions",
            "func": "tighten_memory_limit",
        },
    }
    return {
        "chaoslib-version": "1.44.0",
        "node": "bench",
        "platform": "Linux",
        "experiment": {
            "title": "Orders at 512Mi under replayed traffic",
            "description": "bench",
            "steady-state-hypothesis": {"title": "orders is healthy", "probes": [probe]},
            "method": [action],
        },
        "start": iso,
        "end": iso,
        "duration": float(SAMPLES),
        "status": "completed",
        "deviated": False,
        "steady_states": {"before": state, "after": state, "during": []},
        "run": [
            {
                "activity": action,
                "output": None,
                "status": "succeeded",
                "start": iso,
                "end": iso,
                "duration": 0.2,
            }
        ],
        "rollbacks": [],
        "extensions": [
            {
                "name": "chaosmem",
                "timeline": timeline,
                "run": "bench",
                "restored": [
                    {
                        "kind": "memory-limit",
                        "target": {"type": "service", "name": "orders"},
                        "done": "restored the memory limit of orders to 1Gi",
                        "error": None,
                    }
                ],
            }
        ],
    }


ROUNDS = 3


def command_seconds(path: Path, out: Path) -> list[float]:
    """Wall-clock seconds of ``chaosmem report JOURNAL -o OUT``, one per round."""
    command = [str(Path(sys.executable).with_name("chaosmem")), "report", str(path), "-o", str(out)]
    rounds: list[float] = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        rounds.append(time.perf_counter() - began)
    return rounds


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.json"
        path.write_text(json.dumps(journal(time.time() - SAMPLES)))
        began = time.perf_counter()
        html = render(build_report([path]), "html")
        seconds = time.perf_counter() - began
        whole = command_seconds(path, Path(tmp) / "report.html")
        journal_size = path.stat().st_size
    out = ROOT / "reports" / "bench.html"
    out.parent.mkdir(exist_ok=True)
    out.write_text(html)
    size = len(html.encode())
    print(
        f"report_render: {SAMPLES} samples -> {seconds:.3f} s, "
        f"{size} bytes of HTML ({size / 1e6:.2f} MB)"
    )
    print(
        f"report_render: `chaosmem report` on the {journal_size / 1e6:.1f} MB journal, whole "
        f"command: min {min(whole):.3f} s, median {statistics.median(whole):.3f} s, "
        f"max {max(whole):.3f} s over {ROUNDS} rounds"
    )
    return 0 if seconds < 1 and size < 1_000_000 else 1


if __name__ == "__main__":
    sys.exit(main())
