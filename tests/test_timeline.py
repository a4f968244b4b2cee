"""The recorder against a real memory cgroup, real stressor files and a real replay file."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import set_current_run
from chaosmem.targets.cgroup import Cgroup
from chaosmem.timeline import TIMELINE_FILE, Recorder, read_timeline
from tests.stress_support import ledgered


def samples(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == "sample"]


@pytest.mark.kernel
def test_samples_limit_usage_and_a_real_oom_kill(tmp_path: Path, cgroup: Cgroup) -> None:
    cgroup.set_memory_limit(64 << 20)
    spec = {"type": "cgroup", "path": str(cgroup.path)}
    recorder = Recorder(
        directory=tmp_path / "run",
        interval=0.1,
        targets=[spec],
        configuration={"chaosmem_state_dir": str(tmp_path / "state")},
    )
    recorder.start()
    recorder.mark("activity-start", name="allocate", activity_type="action")
    time.sleep(0.25)
    child = cgroup.spawn(
        [sys.executable, "-c", "b = bytearray(256 << 20); import time; time.sleep(30)"]
    )
    assert child.wait(timeout=20) == -9  # the kernel's OOM killer, not us
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and cgroup.oom_kill_count() == 0:
        time.sleep(0.05)
    time.sleep(0.3)
    recorder.mark("oom-kill", target=cgroup.path.name, count=cgroup.oom_kill_count())
    recorder.mark("activity-end", name="allocate", status="succeeded")
    records = recorder.stop()

    rows = [s["targets"][0] for s in samples(records)]
    assert len(rows) >= 3
    assert all(row["limit"] == 64 << 20 for row in rows)
    assert rows[0]["oom_kills"] == 0 and rows[-1]["oom_kills"] >= 1
    assert rows[0]["name"] == cgroup.path.name
    events = [r["event"] for r in records if r["kind"] == "mark"]
    assert events == ["activity-start", "oom-kill", "activity-end"]
    assert records[-1]["kind"] == "stats" and records[-1]["samples"] == len(rows)
    assert [r["t"] for r in records] == sorted(r["t"] for r in records)
    # the same records, as JSON lines beside the run
    assert read_timeline(tmp_path / "run" / TIMELINE_FILE) == records


def test_reads_stressors_and_the_latest_replay(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "stress").mkdir(parents=True)
    (state / "stress" / "a.json").write_text(json.dumps({"bytes": 100 << 20, "run": "run-r"}))
    (state / "stress" / "b.json").write_text(json.dumps({"bytes": 28 << 20, "run": "run-r"}))
    (state / "stress" / "torn.json").write_text('{"bytes": 12')
    ledgered(state, "run-r", ["a", "b", "torn"])
    replay = state / "replays" / "r1"
    replay.mkdir(parents=True)
    old = {"t": time.time() - 3600, "sent": 9, "completed": 9, "status": {"200": 9}}
    (replay / "seconds.jsonl").write_text(json.dumps(old) + "\n")

    recorder = Recorder(
        directory=tmp_path / "run",
        interval=0.1,
        targets=[],
        configuration={"chaosmem_state_dir": str(state)},
    )
    set_current_run("run-r")
    try:
        recorder.start()
        # the replay starts in this run: the run's pointer names it (as set_latest writes it)
        (state / "runs" / "run-r").mkdir(parents=True)
        (state / "runs" / "run-r" / "replay").write_text("r1\n")
    finally:
        set_current_run(None)
    with (replay / "seconds.jsonl").open("a") as handle:
        for n in range(3):
            line = {
                "t": time.time(),
                "sent": 10,
                "completed": 10 - n,
                "status": {"200": 9 - n, "503": 1},
                "errors": {},
                "lag_p99_ms": 5.0 + n,
            }
            handle.write(json.dumps(line) + "\n")
        handle.write('{"t": ')  # half a line: the next tick reads it once complete
        handle.flush()
        time.sleep(0.35)
        handle.write(
            json.dumps(time.time()) + ', "sent": 1, "completed": 1, "status": {"200": 1}}\n'
        )
    time.sleep(0.35)
    records = recorder.stop()

    stress = [s["stress"] for s in samples(records)]
    assert stress[0] == {"bytes": 128 << 20, "stressors": 2}
    traffic = [s["traffic"] for s in samples(records) if "traffic" in s]
    assert sum(t["sent"] for t in traffic) == 31  # the hour-old line is not this run's
    assert sum(t["status"].get("503", 0) for t in traffic) == 3
    assert max(t["lag_p99_ms"] or 0 for t in traffic) == 7.0
    assert "targets" not in samples(records)[0]


def test_a_target_that_cannot_be_read_is_recorded_not_raised(tmp_path: Path) -> None:
    def resolve(_spec: Any, _config: Any) -> Any:
        raise FileNotFoundError("no such cgroup")

    recorder = Recorder(
        directory=tmp_path,
        interval=0.1,
        targets=[{"type": "service", "name": "orders"}],
        configuration={"chaosmem_state_dir": str(tmp_path / "s")},
        resolve=resolve,
    )
    recorder.start()
    time.sleep(0.15)
    rows = [s["targets"][0] for s in samples(recorder.stop())]
    assert rows and all(
        r == {"name": "orders", "error": "FileNotFoundError: no such cgroup"} for r in rows
    )


@pytest.mark.parametrize("interval", [0, -1, 0.001, float("nan"), True, "1s"])
def test_interval_is_validated(tmp_path: Path, interval: Any) -> None:
    with pytest.raises(InvalidArgument, match="'interval'"):
        Recorder(directory=tmp_path, interval=interval, targets=[], configuration=None)


def _open_paths() -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


def test_a_late_mark_is_written_without_leaving_the_file_open(tmp_path: Path) -> None:
    recorder = Recorder(
        directory=tmp_path / "run",
        interval=0.1,
        targets=[],
        configuration={"chaosmem_state_dir": str(tmp_path / "state")},
    )
    recorder.start()
    records = recorder.stop()
    path = str(tmp_path / "run" / TIMELINE_FILE)
    assert path not in _open_paths()
    recorder.mark("oom-kill", count=1)  # an OOM watcher's last callback, after the end
    assert path not in _open_paths()
    assert read_timeline(tmp_path / "run" / TIMELINE_FILE)[-1]["event"] == "oom-kill"
    assert recorder.stop()[len(records) :][0]["event"] == "oom-kill"  # and stop() is repeatable
