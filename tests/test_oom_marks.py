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
#: The service waits a moment (so the control's watcher is on it), then outgrows its 32 MiB.
SERVICE = (
    f'{sys.executable} -c "import time; time.sleep(1.5); b = bytearray(128 << 20); time.sleep(30)"'
)


def test_a_kill_in_one_of_two_targets_is_placed_exactly(tmp_path: Path, cgroup: Cgroup) -> None:
    orders = {"type": "service", "name": "orders"}
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
                            {"name": "orders", "command": SERVICE, "memory_limit": "32Mi"}
                        ],
                    },
                },
            }
        ],
        "method": [
            {
                "type": "probe", "name": "kills-in-orders", "tolerance": 1,
                "provider": {
                    "type": "python", "module": "chaosmem.limits.probes", "func": "oom_kill_count",
                    "arguments": {"target": orders},
                },
                "pauses": {"before": 4},
            },
        ],
    }  # fmt: skip
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    journal_path = tmp_path / "journal.json"
    env = {**os.environ, "CHAOSMEM_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal_path), str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    journal = json.loads(journal_path.read_text())
    assert journal["run"][0]["output"] == 1, output
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
