"""Real `chaos run`: the OOM experiment passes, and the limit comes back however the run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.report import build_report
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO, free_port

CHAOS = str(Path(sys.executable).parent / "chaos")
CHAOSMEM = str(Path(sys.executable).parent / "chaosmem")


def run_chaos(
    experiment: Path, journal: Path, env_state: Path, **kwargs: Any
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHAOSMEM_STATE_DIR": str(env_state)}
    return subprocess.Popen(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(experiment)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,
    )


def test_local_oom_experiment_passes_and_cleans_up(tmp_path: Path) -> None:
    port = str(free_port())
    text = (REPO / "experiments" / "local-oom.json").read_text().replace("18931", port)
    experiment = tmp_path / "local-oom.json"
    experiment.write_text(text)
    proc = run_chaos(experiment, tmp_path / "journal.json", tmp_path / "state")
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    journal = json.loads((tmp_path / "journal.json").read_text())
    outputs = {r["activity"]["name"]: r.get("output") for r in journal["run"]}
    assert outputs["oom-kills-before"] == 0
    assert outputs["oom-kills-after"] >= 1
    assert outputs["limit-while-tight"] == 64 << 20
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    assert extension["oom_kills"] and extension["oom_kills"][0]["count"] == 1
    service_cgroup = Path(extension["restored"][-1]["target"]["path"])
    assert not service_cgroup.exists()  # the control stopped the service and removed its cgroup
    # The report's figures are the kernel's: the peak it kept (at the 64Mi limit when it killed,
    # not a 1 s sample), the kill drawn at the usage the kernel had then, and the victim.
    [experiment_row] = build_report([tmp_path / "journal.json"])["experiments"]
    [target] = experiment_row["timeline"]["targets"]
    assert target["peak_from"] == "memory.max_usage_in_bytes (reset at run start)"
    assert abs(target["peak_usage"] - (64 << 20)) <= 0.05 * (64 << 20)
    assert target["limit_before"] == 256 << 20 and target["limit_min"] == 64 << 20
    [kill] = target["oom_kills"]
    assert abs(kill["usage"] - (64 << 20)) <= 0.05 * (64 << 20)
    worker = (
        json.loads(outputs["allocate-200Mi"]["body"])["worker"]
        if isinstance(outputs["allocate-200Mi"]["body"], str)
        else outputs["allocate-200Mi"]["body"]["worker"]
    )
    assert kill["victim_pid"] == worker
    events = [r for r in experiment_row["method"] if r["kind"] == "event"]
    assert any(f"pid {worker}" in e["name"] and "memory.stat: anon" in e["detail"] for e in events)


def test_local_oom_experiment_fails_when_no_oom_kill_happens(tmp_path: Path) -> None:
    """Its title claims an OOM kill: a 10Mi allocation fits under 64Mi, so the run must fail."""
    port = str(free_port())
    text = (REPO / "experiments" / "local-oom.json").read_text().replace("18931", port)
    assert "mib=200" in text
    experiment = tmp_path / "local-oom.json"
    experiment.write_text(text.replace("mib=200", "mib=10"))
    journal = tmp_path / "journal.json"
    proc = run_chaos(experiment, journal, tmp_path / "state")
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode != 0, output
    data = json.loads(journal.read_text())
    assert data["deviated"] is True
    after = {p["activity"]["name"]: p for p in data["steady_states"]["after"]["probes"]}
    assert after["no-worker-escaped-the-oom-killer"]["tolerance_met"] is False
    gate = subprocess.run(
        [CHAOSMEM, "gate", str(journal)], capture_output=True, text=True, timeout=60
    )
    assert gate.returncode == 1 and "DEVIATED" in gate.stdout, gate.stdout


def tight_experiment(tmp_path: Path, group: Cgroup) -> Path:
    experiment = {
        "title": "hold a tight limit",
        "description": "tightens a cgroup and waits, so the test can interrupt it",
        "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(group.path)}},
        "controls": [
            {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
        ],
        "method": [
            {
                "type": "action",
                "name": "tighten",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.limits.actions",
                    "func": "tighten_memory_limit",
                    "arguments": {"limit": "64Mi"},
                },
                "pauses": {"after": 60},
            },
        ],
        "rollbacks": [],
    }
    path = tmp_path / "tight.json"
    path.write_text(json.dumps(experiment))
    return path


#: Hang guards, not speed checks: under qemu TCG (the cgroup v2 lane) a `chaos run` starts and
#: ends an order of magnitude slower than on the host.
HANG = 300


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``chaos run`` (none of its cleanup code runs), reap it and close its pipe."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def wait_for_limit(group: Cgroup, value: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG
    while group.memory_limit() != value:
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, "the limit never became tight"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGINT, marks=pytest.mark.kernel), signal.SIGTERM]
)
def test_interrupted_run_restores_the_limit(
    tmp_path: Path, cgroup: Cgroup, sig: signal.Signals
) -> None:
    cgroup.set_memory_limit(256 << 20)
    proc = run_chaos(
        tight_experiment(tmp_path, cgroup), tmp_path / "journal.json", tmp_path / "state"
    )
    wait_for_limit(cgroup, 64 << 20, proc)
    proc.send_signal(sig)
    output = proc.communicate(timeout=HANG)[0].decode()
    assert cgroup.memory_limit() == 256 << 20, output
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "interrupted", output
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    assert [r["kind"] for r in extension["restored"]] == ["cgroup-limit"], output


@pytest.mark.kernel
def test_sigkilled_run_is_restored_by_chaosmem_rollback(tmp_path: Path, cgroup: Cgroup) -> None:
    cgroup.set_memory_limit(256 << 20)
    state = tmp_path / "state"
    proc = run_chaos(tight_experiment(tmp_path, cgroup), tmp_path / "journal.json", state)
    try:
        wait_for_limit(cgroup, 64 << 20, proc)
    finally:
        sigkill(proc)
    assert cgroup.memory_limit() == 64 << 20  # nothing ran: the ledger is all that is left
    dry = subprocess.run(
        [CHAOSMEM, "rollback", "--state-dir", str(state), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0 and "would undo cgroup-limit" in dry.stdout
    assert cgroup.memory_limit() == 64 << 20
    done = subprocess.run(
        [CHAOSMEM, "rollback", "--state-dir", str(state)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "memory limit restored to 256Mi" in done.stdout
    assert cgroup.memory_limit() == 256 << 20
    again = subprocess.run(
        [CHAOSMEM, "rollback", "--state-dir", str(state)], capture_output=True, text=True
    )
    assert again.returncode == 0 and "nothing to roll back" in again.stdout


def test_a_fixture_that_cannot_start_interrupts_the_run(tmp_path: Path) -> None:
    experiment = {
        "title": "bad fixture",
        "description": "a service argument is wrong",
        "controls": [
            {
                "name": "chaosmem",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.control",
                    "arguments": {
                        "services": [{"name": "x", "command": "sleep 5", "memory_limit": "lots"}]
                    },
                },
            }
        ],
        "method": [
            {
                "type": "probe",
                "name": "noop",
                "provider": {
                    "type": "python",
                    "module": "os.path",
                    "func": "exists",
                    "arguments": {"path": "/"},
                },
            }
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(experiment))
    proc = run_chaos(path, tmp_path / "journal.json", tmp_path / "state")
    output = proc.communicate(timeout=60)[0].decode()
    assert "argument 'memory_limit': got 'lots'" in output
    assert json.loads((tmp_path / "journal.json").read_text())["status"] == "interrupted"


def test_chaos_discover_lists_every_activity(tmp_path: Path) -> None:
    out = tmp_path / "discovery.json"
    proc = subprocess.run(
        [
            CHAOS,
            "--no-log-file",
            "discover",
            "--no-install",
            "--discovery-path",
            str(out),
            "chaosmem",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    activities = {a["name"]: a for a in json.loads(out.read_text())["activities"]}
    for name in (
        "tighten_memory_limit",
        "restore_memory_limit",
        "memory_limit",
        "memory_usage",
        "oom_kill_count",
        "start_service",
        "stop_service",
    ):
        assert name in activities
    assert {a["name"] for a in activities["tighten_memory_limit"]["arguments"]} >= {
        "target",
        "limit",
        "fraction",
    }
