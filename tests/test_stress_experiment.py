"""Real `chaos run`s: the local-stress experiment passes, and the control stops what a run left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosmem.ledger import Ledger
from chaosmem.stress.stopping import STRESSOR_KIND
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO, free_port

CHAOS = str(Path(sys.executable).parent / "chaos")
CHAOSMEM = str(Path(sys.executable).parent / "chaosmem")


def chaos_run(
    experiment: Path, tmp_path: Path, *, passes: bool = True
) -> tuple[dict[str, Any], str]:
    journal = tmp_path / "journal.json"
    proc = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(experiment)],
        cwd=REPO,
        env={**os.environ, "CHAOSMEM_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert (proc.returncode == 0) is passes, proc.stdout + proc.stderr
    return json.loads(journal.read_text()), proc.stdout + proc.stderr


def gate(journal: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHAOSMEM, "gate", str(journal)], capture_output=True, text=True, timeout=60, check=False
    )


def shipped_stress_experiment(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """The shipped experiment on a free port, with each ``(old, new)`` edit made exactly once."""
    text = (
        (REPO / "experiments" / "local-stress.json").read_text().replace("18941", str(free_port()))
    )
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    experiment = tmp_path / "local-stress.json"
    experiment.write_text(text)
    return experiment


def hypothesis_outputs(journal: dict[str, Any], when: str) -> dict[str, Any]:
    return {
        p["activity"]["name"]: p.get("output") for p in journal["steady_states"][when]["probes"]
    }


def test_local_stress_experiment_passes_and_cleans_up(tmp_path: Path) -> None:
    journal, output = chaos_run(shipped_stress_experiment(tmp_path), tmp_path)
    assert journal["status"] == "completed" and journal["deviated"] is False, output
    # before the method there is no stressor yet (accepted by name); after it, the kill is proven
    before = hypothesis_outputs(journal, "before")["growth-was-oom-killed"]
    after = hypothesis_outputs(journal, "after")["growth-was-oom-killed"]
    assert before["verdict"] == "no-stressor-yet" and before["started"] == 0, before
    assert after["verdict"] == "oom-killed" and after["started"] == 2, after
    assert after["matched"] == after["oom_killed"] == 1
    verdict = gate(tmp_path / "journal.json")
    assert verdict.returncode == 0 and "PASSED" in verdict.stdout, verdict.stdout + verdict.stderr
    outputs = {r["activity"]["name"]: r.get("output") for r in journal["run"]}
    assert outputs["oom-kills-before"] == 0
    grown = outputs["grow-200Mi-at-50Mi-per-second"]
    assert grown["oom_killed"] is True and grown["kills"] == 1
    assert outputs["oom-kills-after-growth"] >= 1
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    service_cgroup = Path(extension["restored"][-1]["target"]["path"])
    assert not service_cgroup.exists()
    assert not Ledger(tmp_path / "state").read().open()


GROW = '"size": "200Mi", "growth_rate": "50Mi/s", "fragmentation"'
CLAIM = '"arguments": {"size": "200Mi", "growth_rate": "50Mi/s"}'


@pytest.mark.parametrize(
    ("edits", "verdict"),
    [
        # the limit loosened: 200Mi fits under 256Mi and nothing is killed
        ([('"limit": "128Mi"', '"limit": "256Mi"')], "survived"),
        # the growth cut to 10Mi in the action and the claim alike: it fits, nothing is killed
        (
            [(GROW, GROW.replace("200Mi", "10Mi")), (CLAIM, CLAIM.replace("200Mi", "10Mi"))],
            "survived",
        ),
        # the growth cut to 10Mi in the action only: the claim matches no stressor of the run
        ([(GROW, GROW.replace("200Mi", "10Mi"))], "none-matched"),
    ],
    ids=["limit-256Mi", "growth-10Mi", "growth-10Mi-claim-unchanged"],
)
def test_local_stress_experiment_fails_when_no_oom_kill_happens(
    tmp_path: Path, edits: list[tuple[str, str]], verdict: str
) -> None:
    """Its title claims an OOM kill at the limit: without one, the run deviates and the gate fails."""
    journal, output = chaos_run(shipped_stress_experiment(tmp_path, *edits), tmp_path, passes=False)
    assert journal["deviated"] is True, output
    outputs = {r["activity"]["name"]: r.get("output") for r in journal["run"]}
    assert outputs["grow-200Mi-at-50Mi-per-second"]["oom_killed"] is False
    after = hypothesis_outputs(journal, "after")["growth-was-oom-killed"]
    assert after["verdict"] == verdict and after["oom_killed"] == 0, after
    assert hypothesis_outputs(journal, "after")["service-answers"]["status"] == 200
    failed = gate(tmp_path / "journal.json")
    assert failed.returncode == 1 and "DEVIATED" in failed.stdout, failed.stdout + failed.stderr
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
