"""The stress timeline counts only this recording's stressors, also with no run id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaosmem.stress.actions import inject_allocation_stress, stop_allocation_stress
from chaosmem.stress.status import read_status
from chaosmem.targets.cgroup import Cgroup
from chaosmem.timeline.recorder import Recorder
from tests.stress_support import MI, no_stressor_outlives_the_test, target_of, wait_until

__all__ = ["no_stressor_outlives_the_test"]


def _holding(result: dict[str, Any], size: int) -> bool:
    status = read_status(Path(result["stressors"][0]["status_file"]))
    return status is not None and int(status.get("bytes", 0)) >= size


def _written(recorder: Recorder) -> list[dict[str, Any]]:
    lines = recorder.path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_back_to_back_injections_outside_a_run_count_only_the_recordings_own(
    tmp_path: Path, cgroup: Cgroup, state: dict[str, Any]
) -> None:
    # The earlier injection still holds 8Mi (and rewrites its status) when the recording starts.
    first = inject_allocation_stress(target_of(cgroup), size="8Mi", configuration=state)
    assert wait_until(lambda: _holding(first, 8 * MI), timeout=20)
    recorder = Recorder(
        directory=tmp_path / "timeline", targets=[], configuration=state, interval=0.05
    )
    recorder.start()
    try:
        second = inject_allocation_stress(target_of(cgroup), size="4Mi", configuration=state)
        assert wait_until(lambda: _holding(second, 4 * MI), timeout=20)
        assert wait_until(
            lambda: any(r.get("stress", {}).get("bytes", 0) >= 4 * MI for r in _written(recorder)),
            timeout=20,
        )
    finally:
        records = recorder.stop()
        stop_allocation_stress(configuration=state)
    samples = [r for r in records if r["kind"] == "sample"]
    assert "stress" not in samples[0]  # the first sample, before the second injection
    counted = [s["stress"] for s in samples if "stress" in s]
    assert counted and all(c["stressors"] == 1 and c["bytes"] <= 4 * MI for c in counted)
    assert counted[-1]["bytes"] == 4 * MI
