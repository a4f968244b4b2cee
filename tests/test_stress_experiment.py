"""Real `chaos run`s: the local-stress experiment passes, and the control stops what a run left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from chaosmem.ledger import Ledger
from chaosmem.stress.stopping import STRESSOR_KIND
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO, free_port

CHAOS = str(Path(sys.executable).parent / "chaos")


def chaos_run(experiment: Path, tmp_path: Path) -> tuple[dict[str, Any], str]:
    journal = tmp_path / "journal.json"
    proc = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(experiment)],
        cwd=REPO,
        env={**os.environ, "CHAOSMEM_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(journal.read_text()), proc.stdout + proc.stderr


def test_local_stress_experiment_passes_and_cleans_up(tmp_path: Path) -> None:
    port = str(free_port())
    experiment = tmp_path / "local-stress.json"
    text = (REPO / "experiments" / "local-stress.json").read_text().replace("18941", port)
    experiment.write_text(text)
    journal, output = chaos_run(experiment, tmp_path)
    assert journal["status"] == "completed", output
    outputs = {r["activity"]["name"]: r.get("output") for r in journal["run"]}
    assert outputs["oom-kills-before"] == 0
    grown = outputs["grow-200Mi-at-50Mi-per-second"]
    assert grown["oom_killed"] is True and grown["kills"] == 1
    assert outputs["oom-kills-after-growth"] >= 1
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    service_cgroup = Path(extension["restored"][-1]["target"]["path"])
    assert not service_cgroup.exists()
    assert not Ledger(tmp_path / "state").read().open()


def test_the_control_stops_a_stressor_the_run_left(tmp_path: Path, cgroup: Cgroup) -> None:
    experiment = {
        "title": "leave a stressor running",
        "description": "starts a stressor that holds until stopped and never stops it",
        "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}},
        "controls": [
            {
                "name": "chaosmem",
                "provider": {"type": "python", "module": "chaosmem.control"},
            }
        ],
        "method": [
            {
                "type": "action",
                "name": "stress-until-stopped",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.stress.actions",
                    "func": "inject_allocation_stress",
                    "arguments": {"size": "32Mi", "growth_rate": "64Mi/s"},
                },
                "pauses": {"after": 1},
            }
        ],
    }
    path = tmp_path / "leave.json"
    path.write_text(json.dumps(experiment))
    journal, output = chaos_run(path, tmp_path)
    started = journal["run"][0]["output"]["pids"]
    assert started and not cgroup.pids(), output
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    restored = [r for r in extension["restored"] if r["kind"] == STRESSOR_KIND]
    assert restored and f"stopped pids {started}" in restored[0]["done"]
    assert not Ledger(tmp_path / "state").read().open(kind=STRESSOR_KIND)
