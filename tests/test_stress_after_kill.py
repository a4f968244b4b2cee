"""A SIGKILLed `chaos run` leaves a stressor's status behind; after `chaosmem rollback` it says 0.

Its engine dies with the run (PR_SET_PDEATHSIG) before it can write its last status, so the file
keeps the bytes it held: every later run's timeline would sum them as phantom stress.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chaosmem.ledger import Ledger
from chaosmem.stress.status import read_status
from chaosmem.stress.stopping import STRESSOR_KIND, find_engines
from chaosmem.targets.cgroup import Cgroup
from chaosmem.timeline.sources import SourceSetup, StressSource
from tests.conftest import REPO

CHAOS = str(Path(sys.executable).parent / "chaos")
CHAOSMEM = str(Path(sys.executable).parent / "chaosmem")


def test_a_stressor_of_a_sigkilled_run_reports_0_bytes_after_rollback(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    state = tmp_path / "state"
    experiment = {
        "title": "hold stress, then get SIGKILLed",
        "description": "the test kills chaos run while the stressor holds",
        "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}},
        "controls": [
            {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
        ],
        "method": [
            {
                "type": "action", "name": "stress",
                "provider": {
                    "type": "python", "module": "chaosmem.stress.actions",
                    "func": "inject_allocation_stress", "arguments": {"size": "16Mi", "hold": "60s"},
                },
                "pauses": {"after": 60},
            }
        ],
    }  # fmt: skip
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    env = {**os.environ, "CHAOSMEM_STATE_DIR": str(state), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(tmp_path / "j.json"), str(path)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    status: Path | None = None
    while status is None or (read_status(status) or {}).get("phase") != "hold":
        assert proc.poll() is None and time.monotonic() < deadline, "the stressor never held"
        status = next(iter((state / "stress").glob("*.json")), None)
        time.sleep(0.05)
    stressor_id = status.name.removesuffix(".json")
    # NB: frozen first, so the engine cannot notice its parent's end and write a last status:
    # the SIGKILL that PR_SET_PDEATHSIG sends ends it as it stands, as a crash would.
    for pid in find_engines(stressor_id, cgroup=cgroup.path, status=status):
        os.kill(pid, signal.SIGSTOP)
    proc.kill()
    proc.wait()
    while find_engines(stressor_id, cgroup=cgroup.path, status=status):
        assert time.monotonic() < deadline, "the engine outlived its run"
        time.sleep(0.05)
    assert (read_status(status) or {}).get("bytes") == 16 << 20  # what the dead engine left

    done = subprocess.run(
        [CHAOSMEM, "rollback", "--state-dir", str(state)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    after = read_status(status) or {}
    assert after.get("bytes") == 0 and after.get("phase") == "done", after
    [entry] = [e for e in Ledger(state).read().entries if e.kind == STRESSOR_KIND]
    # Its own run's timeline reads 0 bytes now; a later recording (another run, or outside a
    # run in another process) never counts that run's stressor at all.
    for run, expected in (
        (entry.run, {"bytes": 0, "stressors": 1}),
        ("run-later", None),
        (None, None),
    ):
        setup = SourceSetup(
            targets=[], configuration=None, state=state, started=time.time(), run=run
        )
        assert StressSource(setup).sample() == expected, run
