"""Real `chaos run`: the control restores first, whatever the timeline's sources do at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import InterruptExecution
from chaoslib.exit import exit_signals

from chaosmem import control
from chaosmem.ledger import LEDGER_FILE, Ledger
from chaosmem.limits.actions import tighten_memory_limit
from chaosmem.targets.cgroup import Cgroup
from chaosmem.timeline import Recorder
from tests.conftest import REPO

CHAOS = str(Path(sys.executable).parent / "chaos")


@pytest.mark.parametrize("mode", ["hang", "exit", "raise-close"])
def test_a_source_that_hangs_or_raises_at_teardown_does_not_stop_the_restore(
    tmp_path: Path, cgroup: Cgroup, mode: str
) -> None:
    cgroup.set_memory_limit(256 << 20)
    trigger = tmp_path / "teardown-begins"
    experiment = {
        "title": "tighten, then end with a misbehaving timeline source",
        "description": "the test's source hangs or raises once the method is over",
        "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}},
        "controls": [
            {"name": "teardown", "provider": {"type": "python", "module": "tests.teardown_source"}},
            {
                "name": "chaosmem",
                # NB: one sample at the start, the next only at the end: the teardown's.
                "provider": {
                    "type": "python", "module": "chaosmem.control", "arguments": {"interval": "1h"},
                },
            },
        ],
        "method": [
            {
                "type": "action", "name": "tighten",
                "provider": {
                    "type": "python", "module": "chaosmem.limits.actions",
                    "func": "tighten_memory_limit", "arguments": {"limit": "64Mi"},
                },
            },
            {
                "type": "action", "name": "end-of-method",
                "provider": {
                    "type": "python", "module": "os", "func": "mkdir",
                    "arguments": {"path": str(trigger)},
                },
            },
        ],
    }  # fmt: skip
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    journal_path = tmp_path / "journal.json"
    env = {
        **os.environ,
        "CHAOSMEM_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": str(REPO),
        "TEARDOWN_SOURCE_MODE": mode,
        "TEARDOWN_SOURCE_TRIGGER": str(trigger),
    }
    proc = subprocess.Popen(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal_path), str(path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        output = proc.communicate(timeout=90)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0].decode()
        restored_then = cgroup.memory_limit() == 256 << 20
        pytest.fail(f"chaos run hung at teardown (limit restored: {restored_then}):\n{output}")
    assert trigger.exists(), output
    assert cgroup.memory_limit() == 256 << 20, output
    assert not Ledger(tmp_path / "state").read().open(), output
    journal = json.loads(journal_path.read_text())
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    assert [r["kind"] for r in extension["restored"]] == ["cgroup-limit"], output
    stats = [r for r in extension["timeline"] if r["kind"] == "stats"]
    assert len(stats) == 1, output
    assert stats[0].get("stalled", False) is (mode == "hang"), output


def test_a_restore_that_fails_is_tried_again_at_cleanup(
    tmp_path: Path, cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """The run stays reachable until its restore has run: cleanup_control can still do it."""
    cgroup.set_memory_limit(256 << 20)
    spec = {"type": "cgroup", "path": str(cgroup.path)}
    experiment = {"title": "t", "method": []}
    control.before_experiment_control(experiment, configuration=state)
    try:
        tighten_memory_limit(spec, limit="64Mi", configuration=state)
        ledger = Path(state["chaosmem_state_dir"]) / LEDGER_FILE
        ledger.rename(ledger.with_name("away"))
        ledger.mkdir()  # the ledger cannot be read: the restore fails
        journal: dict[str, Any] = {"status": "completed"}
        control.after_experiment_control(experiment, state=journal, configuration=state)
        assert cgroup.memory_limit() == 64 << 20
        ledger.rmdir()
        ledger.with_name("away").rename(ledger)
    finally:
        control.cleanup_control()
    assert cgroup.memory_limit() == 256 << 20
    assert not Ledger(Path(state["chaosmem_state_dir"])).read().open()


class _SlowSource:
    """A source that takes 0.3 s a sample (a slow HTTP endpoint)."""

    key = "slow"

    def sample(self) -> int:
        time.sleep(0.3)
        return 1


def test_a_sigterm_while_the_control_records_reaches_chaos_toolkit(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    """Chaos Toolkit's own handler raises InterruptExecution wherever the main thread is: while
    the control waits for a mark's sample, it must reach Chaos Toolkit, not be logged away."""
    recorder = Recorder(
        directory=tmp_path / "run", interval=60, targets=[], configuration=state,
        sources=[_SlowSource()],
    )  # fmt: skip
    run = control._Run(
        "r", Path(state["chaosmem_state_dir"]), tmp_path / "run", state, [], recorder
    )
    recorder.start()
    control._current = run
    activity = {"name": "a", "type": "action"}
    try:
        with exit_signals():  # Chaos Toolkit's handlers, as in `chaos run`
            control.before_activity_control(activity)
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
            with pytest.raises(InterruptExecution):
                control.after_activity_control(activity, state={"status": "succeeded"})
            assert getattr(signal.getsignal(signal.SIGTERM), "__name__", "") == "_terminate_now"
        assert run.interrupted is not None and run.interrupted.signal == "SIGTERM"
    finally:
        control._current = None
        recorder.stop()
