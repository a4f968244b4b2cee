"""`chaosmem stress`: through the action with --target, the bare engine without."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO
from tests.stress_support import MI, no_stressor_outlives_the_test, target_of

__all__ = ["no_stressor_outlives_the_test"]


def chaosmem(*args: str, state: dict[str, Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaosmem.cli", *args, "--state-dir", state["chaosmem_state_dir"]],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_stress_with_a_target_waits_and_prints_the_result(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    cgroup.set_memory_limit(32 * MI)
    done = chaosmem(
        "stress", "--target", json.dumps(target_of(cgroup)), "--size", "64Mi", "--rate", "128Mi/s",
        state=state,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (
        result["oom_killed"] is True
        and result["kills"] == 1
        and result["cgroup"] == str(cgroup.path)
    )
    assert not cgroup.pids()


def test_stress_without_a_target_runs_the_engine_in_the_foreground(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """Started inside the test cgroup, so its pages are charged there and nowhere near ours."""
    argv = [sys.executable, "-m", "chaosmem.cli", "stress", "--size", "8Mi", "--rate", "64Mi/s"]
    argv += ["--hold", "0.1", "--fragmentation", "0.5", "--state-dir", state["chaosmem_state_dir"]]
    proc = cgroup.spawn(argv, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(REPO))
    assert proc.wait(60) == 0
    statuses = list((Path(state["chaosmem_state_dir"]) / "stress").glob("*.json"))
    assert len(statuses) == 1
    status = json.loads(statuses[0].read_text())
    assert status["phase"] == "done" and status["reason"] == "completed"
    assert status["reached"] == 8 * MI and status["bytes"] == 0
    assert status["plan"]["small_share"] == 0.5
    assert status["cgroup"] == str(cgroup.path)


def test_stress_refuses_bad_input(state: dict[str, Any]) -> None:
    done = chaosmem("stress", "--size", "2x", state=state)
    assert done.returncode == 2 and "argument '--size'" in done.stderr
    done = chaosmem("stress", "--size", "8Mi", "--target", "{nope", state=state)
    assert done.returncode == 2 and "argument '--target'" in done.stderr
