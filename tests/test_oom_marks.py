"""Real `chaos run` with two targets: a kill in service ``orders`` is shown at its exact time.

The control's OOM marks carry the target spec they were watched for, and the report matches a
mark to a target by it (a service's cgroup is ``chaosmem-orders``: its basename never matched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaosmem.report.context import experiment_context
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO

CHAOS = str(Path(sys.executable).parent / "chaos")
#: A hang guard, not a speed figure: each wait below gives up (and says "hung") after this long.
HANG = 60
#: The service outgrows its 32 MiB when the method tells it to (the file at $OOM_MARKS_GO
#: appears): by then the control's watcher is on it (started before the method), however
#: long the start took. Then it waits for a signal: the kernel's SIGKILL, or the control's stop.
SERVICE = f"""
import os, signal, sys, time
deadline = time.monotonic() + {HANG}
while not os.path.exists(os.environ["OOM_MARKS_GO"]):
    if time.monotonic() > deadline:
        sys.exit("hung: never told to outgrow the limit")
    time.sleep(0.05)
held = bytearray(128 << 20)
signal.pause()
"""
#: Waits until the kernel has counted a kill in ``orders`` (exit 0), or says it hung.
WAIT_FOR_KILL = f"""
import sys, time
from chaosmem.limits.probes import oom_kill_count
deadline = time.monotonic() + {HANG}
while oom_kill_count({{"type": "service", "name": "orders"}}) < 1:
    if time.monotonic() > deadline:
        sys.exit("hung: no OOM kill in orders")
    time.sleep(0.05)
"""


def test_a_kill_in_one_of_two_targets_is_placed_exactly(tmp_path: Path, cgroup: Cgroup) -> None:
    orders = {"type": "service", "name": "orders"}
    go = tmp_path / "go"
    experiment = {
        "title": "two targets, one OOM kill",
        "description": "the service orders is OOM-killed; the other cgroup is not",
        "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}},
        "controls": [
            {
                "name": "chaosmem",
                "provider": {
                    "type": "python", "module": "chaosmem.control",
                    "arguments": {
                        "interval": "5s",
                        "services": [
                            {
                                "name": "orders", "command": [sys.executable, "-c", SERVICE],
                                "memory_limit": "32Mi", "env": {"OOM_MARKS_GO": str(go)},
                            }
                        ],
                    },
                },
            }
        ],
        "method": [
            {
                "type": "action", "name": "outgrow-the-limit",
                "provider": {"type": "process", "path": "touch", "arguments": [str(go)]},
            },
            {
                "type": "probe", "name": "the-kill-is-counted", "tolerance": 0,
                "provider": {
                    "type": "process", "path": sys.executable, "arguments": ["-c", WAIT_FOR_KILL],
                },
            },
            {
                "type": "probe", "name": "kills-in-orders", "tolerance": 1,
                "provider": {
                    "type": "python", "module": "chaosmem.limits.probes", "func": "oom_kill_count",
                    "arguments": {"target": orders},
                },
            },
        ],
    }  # fmt: skip
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    journal_path = tmp_path / "journal.json"
    env = {**os.environ, "CHAOSMEM_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal_path), str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3 * HANG,
    )  # fmt: skip
    output = done.stdout + done.stderr
    journal = json.loads(journal_path.read_text())
    runs = {r["activity"]["name"]: r for r in journal["run"]}
    assert runs["the-kill-is-counted"]["output"]["status"] == 0, runs["the-kill-is-counted"]
    assert runs["kills-in-orders"]["output"] == 1, output
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    (kill,) = extension["oom_kills"]
    assert kill["target"] == orders, output
    assert kill["cgroup"].endswith("chaosmem-orders"), output

    context = experiment_context(journal, source=str(journal_path), environ={})
    rows = {row["name"]: row for row in context["timeline"]["targets"]}
    assert set(rows) == {"orders", cgroup.path.name}, rows.keys()
    zero = min(float(r["t"]) for r in extension["timeline"])
    # exact: at the kernel event's time, not at the next 5 s sample
    (shown,) = rows["orders"]["oom_kills"]
    assert shown["x"] == pytest.approx(kill["at"] - zero, abs=0.01)
    assert rows[cgroup.path.name]["oom_kills"] == []
