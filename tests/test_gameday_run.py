"""``chaosmem gameday`` runs real plans: real ``chaos run``s on real cgroups, one stopped by a
safeguard, restores between runs, one summary report with every run side by side, JUnit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from chaosmem.ledger import Ledger
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer

CHAOSMEM = str(Path(sys.executable).with_name("chaosmem"))
CONTROL = {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}


def tighten(limit: str) -> dict[str, Any]:
    return {
        "type": "action",
        "name": f"tighten-to-{limit}",
        "provider": {
            "type": "python",
            "module": "chaosmem.limits.actions",
            "func": "tighten_memory_limit",
            "arguments": {"limit": limit},
        },
    }


def stress(size: str) -> dict[str, Any]:
    return {
        "type": "action",
        "name": "hold-memory",
        "provider": {
            "type": "python",
            "module": "chaosmem.stress.actions",
            "func": "inject_allocation_stress",
            "arguments": {"size": size, "hold": "60s"},
        },
        "pauses": {"after": 1},
    }


def limit_probe() -> dict[str, Any]:
    return {
        "type": "probe",
        "name": "limit-now",
        "provider": {"type": "python", "module": "chaosmem.limits.probes", "func": "memory_limit"},
    }


def write_experiments(folder: Path, cgroup: Cgroup, server_url: str) -> None:
    folder.mkdir()
    target = {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}}
    held = {
        "title": "Tighten to a variable limit and hold memory under it",
        "description": "the limit comes from the plan's grid",
        "configuration": {**target, "limit": "100Mi"},
        "controls": [CONTROL],
        "steady-state-hypothesis": {
            "title": "the cgroup exists",
            "probes": [
                {
                    "type": "probe",
                    "name": "cgroup-exists",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "os.path",
                        "func": "isdir",
                        "arguments": {"s": str(cgroup.path)},
                    },
                }
            ],
        },
        "method": [tighten("${limit}"), stress("16Mi"), limit_probe()],
    }
    write_timed_gor(folder / "load.gor", count=300, span_s=15.0)
    guarded = {
        "title": "Half the answers are 503s: the safeguard stops it",
        "description": "a background replay against a server answering 503 half the time",
        "configuration": target,
        "controls": [
            {
                "name": "safeguards",
                "provider": {
                    "type": "python",
                    "module": "chaosaddons.controls.safeguards",
                    "arguments": {
                        "probes": [
                            {
                                "name": "503-ratio-under-20pct-for-2s",
                                "type": "probe",
                                "frequency": 0.5,
                                "provider": {
                                    "type": "python",
                                    "module": "chaosmem.safeguards.probes",
                                    "func": "sustained_status_ratio",
                                    "arguments": {"duration": "2s"},
                                },
                                "tolerance": {"type": "range", "range": [0, 0.2]},
                            }
                        ]
                    },
                },
            },
            CONTROL,
        ],
        "method": [
            tighten("150Mi"),
            stress("8Mi"),
            {
                "type": "action",
                "name": "replay",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.traffic.actions",
                    "func": "replay_traffic",
                    "arguments": {
                        "capture": "load.gor",
                        "target_url": server_url,
                        "wait": False,
                    },
                },
                "pauses": {"after": 60},
            },
        ],
    }
    # No chaosmem control: the limit it tightens stays changed until the game day restores it.
    careless = {
        "title": "Tighten and walk away",
        "description": "leaves its change for chaosmem rollback",
        "configuration": target,
        "method": [tighten("90Mi"), limit_probe()],
    }
    slow = json.loads(json.dumps(held))
    slow["method"][-1]["pauses"] = {"after": 120}
    for name, experiment in (
        ("held", held),
        ("slow", slow),
        ("guarded", guarded),
        ("careless", careless),
    ):
        (folder / f"{name}.json").write_text(json.dumps(experiment, indent=2))


def gameday(plan: Path, reports: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHAOSMEM, "gameday", str(plan), "--reports", str(reports), "--state-dir", str(state)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(plan.parent)},
    )


def test_three_experiments_one_stopped_by_a_safeguard_all_restored_all_reported(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    before = cgroup.memory_limit()
    with RecordingServer(status_for=lambda i: 503 if i % 2 else 200) as server:
        write_experiments(tmp_path / "exp", cgroup, server.url)
        plan = tmp_path / "exp" / "plan.yaml"
        plan.write_text(
            yaml.safe_dump(
                {
                    "name": "three",
                    "on_safeguard": "continue",
                    "experiments": [
                        {
                            "name": "held",
                            "experiment": "held.json",
                            "grid": {"limit": ["100Mi", "120Mi"]},
                        },
                        {"name": "guarded", "experiment": "guarded.json", "timeout": "2m"},
                        {"name": "careless", "experiment": "careless.json"},
                    ],
                }
            )
        )
        done = gameday(plan, tmp_path / "reports", tmp_path / "state")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr  # a run was interrupted: not a pass
    lines = out.splitlines()
    assert lines[0] == "[1/4] held limit=100Mi: running held.json"
    assert "[1/4] held limit=100Mi: PASSED" in out and "[2/4] held limit=120Mi: PASSED" in out
    assert "[3/4] guarded: INTERRUPTED" in out
    assert "stopped by safeguard '503-ratio-under-20pct-for-2s'" in out
    assert "[4/4] careless: PASSED" in out and "restored 1 leftover change(s)" in out
    assert lines[-1].startswith("game day three FAILED: report ")
    # everything restored: the limit, every stressor, every ledger entry of every run
    assert cgroup.memory_limit() == before
    assert cgroup.pids() == []
    runs = sorted((tmp_path / "state" / "gamedays").glob("three-*/*"))
    assert [r.name for r in runs] == ["careless", "guarded", "held-01", "held-02"]
    for state in runs:
        assert not Ledger(state).read().open(), state
    # the grid's values reached the experiment
    folder = tmp_path / "reports" / "three"
    first = json.loads((folder / "held-01.journal.json").read_text())
    second = json.loads((folder / "held-02.journal.json").read_text())
    assert first["run"][0]["activity"]["name"] == "tighten-to-${limit}"
    limits = [
        r["output"]
        for j in (first, second)
        for r in j["run"]
        if r["activity"]["name"] == "limit-now"
    ]
    assert limits == [100 * 2**20, 120 * 2**20]
    # one summary, every run side by side
    md = (folder / "gameday.md").read_text()
    assert (
        "| Experiment | Verdict | Why | Duration | Peak memory | OOM kills | 503 ratio | Reaction time |"
        in md
    )
    for title in ("held limit=100Mi:", "held limit=120Mi:", "guarded:", "careless:"):
        assert title in md
    assert "| stopped by safeguard 503-ratio-under-20pct-for-2s at +" in md
    html = (folder / "gameday.html").read_text()
    assert html.count('<section class="experiment"') == 4
    suites = ET.parse(folder / "gameday-junit.xml").getroot()
    assert len(suites.findall("testsuite")) == 4
    verdicts = {s.get("name"): s.find("testcase[@name='verdict']") for s in suites}
    guarded = next(v for k, v in verdicts.items() if k.startswith("guarded"))
    assert guarded.find("failure") is not None
    assert "safeguard '503-ratio-under-20pct-for-2s'" in guarded.find("failure").get("message")


def test_a_safeguard_stop_ends_the_game_day_and_the_rest_is_reported_not_run(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    before = cgroup.memory_limit()
    with RecordingServer(status_for=lambda i: 503) as server:
        write_experiments(tmp_path / "exp", cgroup, server.url)
        plan = tmp_path / "exp" / "plan.yaml"
        plan.write_text(
            yaml.safe_dump(
                {
                    "name": "stops",
                    "experiments": [
                        {"name": "guarded", "experiment": "guarded.json"},
                        {"name": "careless", "experiment": "careless.json"},
                    ],
                }
            )
        )
        done = gameday(plan, tmp_path / "reports", tmp_path / "state")
    assert done.returncode == 1
    assert (
        "game day stopped: safeguard '503-ratio-under-20pct-for-2s' stopped guarded" in done.stdout
    )
    assert "[2/2]" not in done.stdout  # never started
    assert cgroup.memory_limit() == before and cgroup.pids() == []
    folder = tmp_path / "reports" / "stops"
    assert not (folder / "careless.journal.json").exists()
    md = (folder / "gameday.md").read_text()
    assert "| careless | not-run |" in md
    suites = ET.parse(folder / "gameday-junit.xml").getroot()
    skipped = suites.find("testsuite[@name='runs without a journal']/testcase/skipped")
    assert skipped is not None and "safeguard" in skipped.get("message", "")


def _wait_for(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sigterm_mid_run_restores_reports_and_stops_the_game_day(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    before = cgroup.memory_limit()
    with RecordingServer() as server:
        write_experiments(tmp_path / "exp", cgroup, server.url)
    plan = tmp_path / "exp" / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "name": "sigterm",
                "experiments": [
                    {"name": "slow", "experiment": "slow.json", "vars": {"limit": "110Mi"}},
                    {"name": "careless", "experiment": "careless.json"},
                ],
            }
        )
    )
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            CHAOSMEM,
            "gameday",
            str(plan),
            "--reports",
            str(tmp_path / "reports"),
            "--state-dir",
            str(state),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
    )
    try:
        # wait until the run holds memory in the cgroup under the tightened limit
        assert _wait_for(lambda: cgroup.pids() and cgroup.memory_limit() == 110 * 2**20, 60), (
            "the run never tightened the limit and started its stressor"
        )
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "game day stopped: the game day was interrupted (SIGTERM) during slow" in out
    assert "[2/2]" not in out
    assert cgroup.memory_limit() == before
    assert _wait_for(lambda: cgroup.pids() == [], 10)
    for run_state in (state / "gamedays").glob("sigterm-*/*"):
        assert not Ledger(run_state).read().open()
    folder = tmp_path / "reports" / "sigterm"
    slow = json.loads((folder / "slow.journal.json").read_text())
    assert slow["status"] == "interrupted"  # chaos run got SIGTERM and wrote its journal
    md = (folder / "gameday.md").read_text()
    assert "| slow limit=110Mi: " not in md  # vars, not a grid: the label is the entry name
    assert "| slow: Tighten to a variable limit and hold memory under it | ⏹️ interrupted |" in md
    assert "| careless | not-run |" in md


def test_a_run_past_its_timeout_is_stopped_restored_and_reported(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    before = cgroup.memory_limit()
    with RecordingServer() as server:
        write_experiments(tmp_path / "exp", cgroup, server.url)
    plan = tmp_path / "exp" / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "name": "timeout",
                "on_safeguard": "continue",
                "experiments": [
                    {"name": "slow", "experiment": "slow.json", "timeout": "8s"},
                    {"name": "careless", "experiment": "careless.json"},
                ],
            }
        )
    )
    done = gameday(plan, tmp_path / "reports", tmp_path / "state")
    assert done.returncode == 1
    assert "slow: timed out after 8s and was stopped" in done.stdout
    assert "[1/2] slow: INTERRUPTED" in done.stdout
    assert "[2/2] careless: PASSED" in done.stdout  # a timeout is not a safety failure
    assert cgroup.memory_limit() == before and cgroup.pids() == []
