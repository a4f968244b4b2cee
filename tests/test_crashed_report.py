"""A SIGKILLed ``chaos run`` leaves no journal: ``chaosmem report --state-dir`` still reports it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from chaosmem.targets.cgroup import Cgroup
from tests.test_experiment import (
    CHAOSMEM,
    HANG,
    run_chaos,
    sigkill,
    tight_experiment,
    wait_for_limit,
)


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAOSMEM, "report", *args], capture_output=True, text=True, timeout=60)


def test_report_of_a_sigkilled_run(tmp_path: Path, cgroup: Cgroup) -> None:
    cgroup.set_memory_limit(256 << 20)
    state = tmp_path / "state"
    proc = run_chaos(tight_experiment(tmp_path, cgroup), tmp_path / "journal.json", state)
    try:
        wait_for_limit(cgroup, 64 << 20, proc)
        deadline = time.monotonic() + HANG  # a hang guard, not a speed figure
        tight = f'"limit": {64 << 20}'
        while tight not in "".join(p.read_text() for p in state.glob("runs/*/timeline.jsonl")):
            assert time.monotonic() < deadline, "hung: the run never sampled its tightened limit"
            time.sleep(0.05)
    finally:
        sigkill(proc)
    assert not (tmp_path / "journal.json").exists()
    [run] = [p.name for p in (state / "runs").iterdir()]

    before = _report("--state-dir", str(state), "-o", str(tmp_path / "before.json"))
    assert before.returncode == 0, before.stderr
    [e] = json.loads((tmp_path / "before.json").read_text())["experiments"]
    assert e["verdict"]["status"] == "interrupted"
    assert "rebuilt from the run's timeline and the ledger" in e["verdict"]["reasons"][0]
    assert e["title"] == "hold a tight limit" and e["run"] == run
    [change] = e["restored"]
    assert "still changed" in change["error"] and f"--run {run}" in change["error"]
    [target] = e["timeline"]["targets"]
    assert target["limit_min"] == 64 << 20 and target["limit_before"] == 256 << 20

    assert (
        subprocess.run([CHAOSMEM, "rollback", "--state-dir", str(state)], check=False).returncode
        == 0
    )
    after = _report("--state-dir", str(state), "--run", run, "-o", str(tmp_path / "after.md"))
    assert after.returncode == 0, after.stderr
    text = (tmp_path / "after.md").read_text()
    assert "Interrupted" in text and "restored at" in text
    gate_like = _report("--state-dir", str(state), "--run", "../x", "-o", str(tmp_path / "x.md"))
    assert gate_like.returncode == 2 and "argument '--run'" in gate_like.stderr


def test_report_without_runs_says_what_it_needs(tmp_path: Path) -> None:
    result = _report("--state-dir", str(tmp_path), "-o", str(tmp_path / "r.md"))
    assert result.returncode == 2 and "runs/<run>/timeline.jsonl" in result.stderr
    result = _report("--run", "abc", "-o", str(tmp_path / "r.md"))
    assert result.returncode == 2 and "argument '--state-dir'" in result.stderr
