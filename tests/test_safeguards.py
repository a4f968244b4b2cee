"""Safeguards (chaostoolkit-addons) stop real ``chaos run``s; the chaosmem control restores at once
and the journal and report say which guard stopped the run, when, and what it saw."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from chaosmem.ledger import Ledger
from chaosmem.report import build_report, render
from chaosmem.safeguards.probes import sustained_status_ratio
from chaosmem.targets.cgroup import Cgroup
from chaosmem.traffic.results import replay_dir, set_latest, write_json_atomic
from tests.chaos_run import chaos_run
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def safeguard_control(*probes: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "safeguards",
        "provider": {
            "type": "python",
            "module": "chaosaddons.controls.safeguards",
            "arguments": {"probes": list(probes)},
        },
    }


CHAOSMEM_CONTROL = {
    "name": "chaosmem",
    "provider": {
        "type": "python",
        "module": "chaosmem.control",
        "arguments": {"interval": "200ms"},
    },
}


def action(name: str, module: str, func: str, **arguments: Any) -> dict[str, Any]:
    return {
        "type": "action",
        "name": name,
        "provider": {"type": "python", "module": module, "func": func, "arguments": arguments},
    }


WAIT_A_MINUTE = {
    "type": "probe",
    "name": "wait-a-minute",
    "provider": {"type": "python", "module": "os", "func": "getpid"},
    "pauses": {"after": 60},
}
NEVER_REACHED = {
    "type": "probe",
    "name": "never-reached",
    "provider": {"type": "python", "module": "os", "func": "getpid"},
}


def extension(journal: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in journal["extensions"] if e["name"] == "chaosmem")


def test_a_sustained_503_ratio_stops_the_run_and_everything_is_restored(
    tmp_path: Path, cgroup: Cgroup, state: dict[str, Any]
) -> None:
    limit_before = cgroup.memory_limit()
    capture = write_timed_gor(tmp_path / "load.gor", count=400, span_s=20.0)
    with RecordingServer(status_for=lambda i: 503 if i % 2 else 200) as server:
        experiment = {
            "title": "503s stop the run",
            "description": "half the answers are 503s; the guard allows 20% for 2 s",
            "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}},
            "controls": [
                safeguard_control(
                    {
                        "name": "503-ratio-under-20pct-for-2s",
                        "type": "probe",
                        "frequency": 0.5,
                        "provider": {
                            "type": "python",
                            "module": "chaosmem.safeguards.probes",
                            "func": "sustained_status_ratio",
                            "arguments": {"status": 503, "duration": "2s"},
                        },
                        "tolerance": {"type": "range", "range": [0, 0.2]},
                    }
                ),
                CHAOSMEM_CONTROL,
            ],
            "method": [
                action("tighten", "chaosmem.limits.actions", "tighten_memory_limit", limit="200Mi"),
                action(
                    "replay-in-background",
                    "chaosmem.traffic.actions",
                    "replay_traffic",
                    capture=str(capture),
                    target_url=server.url,
                    wait=False,
                ),
                WAIT_A_MINUTE,
                NEVER_REACHED,
            ],
        }
        code, path = chaos_run(tmp_path / "run", "ratio", experiment)
    journal = json.loads(path.read_text())
    assert journal["status"] == "interrupted"
    assert code != 0
    names = [r["activity"]["name"] for r in journal["run"]]
    assert "never-reached" not in names
    ext = extension(journal)
    guard = ext["safeguard"]
    assert guard["name"] == "503-ratio-under-20pct-for-2s"
    assert 0.2 < guard["output"] <= 1.0
    start = max(r["t"] for r in ext["timeline"] if r.get("event") == "activity-start")
    assert guard["at"] >= start - 1
    # restored at once: the limit, and the replay worker
    assert cgroup.memory_limit() == limit_before
    assert not Ledger(Path(state["chaosmem_state_dir"])).read().open()
    kinds = {r["kind"] for r in ext["restored"]}
    assert {"cgroup-limit", "replay"} <= kinds, ext["restored"]
    # the report says which guard stopped the run and when
    report = build_report([path])
    e = report["experiments"][0]
    assert e["verdict"]["status"] == "interrupted"
    assert e["verdict"]["reasons"][0].startswith(
        "safeguard '503-ratio-under-20pct-for-2s' stopped the run at +"
    )
    assert e["safeguard"]["offset"] is not None and e["safeguard"]["offset"] > 0
    html = render(report, "html")
    assert "503-ratio-under-20pct-for-2s" in html and "stopped this run at +" in html
    assert "Safeguard **503-ratio-under-20pct-for-2s** stopped this run" in render(
        report, "markdown"
    ).replace("\\-", "-")


def test_more_oom_kills_than_the_budget_stops_the_run_and_the_stressor(
    tmp_path: Path, cgroup: Cgroup, state: dict[str, Any]
) -> None:
    limit_before = cgroup.memory_limit()
    experiment = {
        "title": "an OOM kill over the budget stops the run",
        "description": "budget 0 OOM kills; a stressor outgrows the limit",
        "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}},
        "controls": [
            CHAOSMEM_CONTROL,
            safeguard_control(
                {
                    "name": "oom-kill-budget-0",
                    "type": "probe",
                    "frequency": 0.5,
                    "provider": {
                        "type": "python",
                        "module": "chaosmem.limits.probes",
                        "func": "oom_kill_count",
                    },
                    "tolerance": {"type": "range", "range": [0, 0]},
                }
            ),
        ],
        "method": [
            action("tighten", "chaosmem.limits.actions", "tighten_memory_limit", limit="64Mi"),
            action(
                "outgrow-it",
                "chaosmem.stress.actions",
                "inject_allocation_stress",
                size="200Mi",
                growth_rate="100Mi/s",
            ),
            action(
                "hold-more",
                "chaosmem.stress.actions",
                "inject_allocation_stress",
                size="16Mi",
                hold="60s",
            ),
            WAIT_A_MINUTE,
            NEVER_REACHED,
        ],
    }
    _, path = chaos_run(tmp_path / "run", "oom", experiment)
    journal = json.loads(path.read_text())
    assert journal["status"] == "interrupted"
    ext = extension(journal)
    assert ext["safeguard"]["name"] == "oom-kill-budget-0"
    assert ext["safeguard"]["output"] >= 1
    assert "never-reached" not in [r["activity"]["name"] for r in journal["run"]]
    assert cgroup.memory_limit() == limit_before
    assert cgroup.pids() == []  # the holding stressor was stopped
    assert not Ledger(Path(state["chaosmem_state_dir"])).read().open()
    marks = [r for r in ext["timeline"] if r.get("kind") == "mark"]
    assert any(m["event"] == "safeguard" and m["name"] == "oom-kill-budget-0" for m in marks)


def _seconds(state: Path, ratios: list[float | None], t0: float = 1000.0) -> None:
    rid = "r1"
    folder = replay_dir(state, rid)
    folder.mkdir(parents=True)
    lines = []
    for i, ratio in enumerate(ratios):
        status = {} if ratio is None else {"503": int(ratio * 100), "200": 100 - int(ratio * 100)}
        lines.append(json.dumps({"t": t0 + i, "elapsed": i + 1, "status": status}))
    (folder / "seconds.jsonl").write_text("\n".join(lines) + "\n")
    write_json_atomic(folder / "summary.json", {"replay_id": rid, "state": "running"})
    set_latest(state, rid)


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([0.5] * 10, 0.5),  # above for the whole window
        ([0.0] * 5 + [0.5] * 9, 0.0),  # above for 9 s only: not yet
        ([0.5] * 4 + [0.1] + [0.5] * 5, 0.1),  # one good second in the window
        ([0.3] * 20 + [0.6] * 10, 0.6),  # only the last 10 s count
        ([0.5] * 5, 0.0),  # a replay younger than the window
        ([0.5] * 6 + [None] * 4, 0.5),  # seconds without answers count neither way
    ],
)
def test_sustained_ratio_is_the_lowest_second_of_the_window(
    tmp_path: Path, ratios: list[float | None], expected: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHAOSMEM_RUN_ID", raising=False)
    _seconds(tmp_path, ratios)
    got = sustained_status_ratio(
        status="5xx", duration="10s", configuration={"chaosmem_state_dir": str(tmp_path)}
    )
    assert got == pytest.approx(expected)


def test_sustained_ratio_validates_its_arguments(tmp_path: Path) -> None:
    config = {"chaosmem_state_dir": str(tmp_path)}
    assert sustained_status_ratio(configuration=config) == 0.0  # no replay yet
    with pytest.raises(Exception, match="argument 'duration'"):
        sustained_status_ratio(duration="2h", configuration=config)
    with pytest.raises(Exception, match="argument 'duration'"):
        sustained_status_ratio(duration="0.1s", configuration=config)
    with pytest.raises(Exception, match="argument 'status'"):
        sustained_status_ratio(status="6xx", configuration=config)


def test_an_earlier_runs_replay_never_trips_this_runs_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second run on the same state dir: until it starts its own replay, the latest replay is
    the previous run's, all 503s; only seconds since this run started count."""
    import time

    now = time.time()
    _seconds(tmp_path, [1.0] * 20, t0=now - 120)  # the earlier run, two minutes ago
    config = {"chaosmem_state_dir": str(tmp_path)}
    monkeypatch.setenv("CHAOSMEM_RUN_ID", time.strftime("%Y%m%dT%H%M%S") + "-abcdef12")
    assert sustained_status_ratio(duration="10s", configuration=config) == 0.0
    monkeypatch.setenv(
        "CHAOSMEM_RUN_ID", time.strftime("%Y%m%dT%H%M%S", time.localtime(now - 600)) + "-0"
    )
    assert sustained_status_ratio(duration="10s", configuration=config) == 1.0


def test_the_guard_probe_is_discovered() -> None:
    import chaosmem

    found = {a["name"]: a for a in chaosmem.discover()["activities"]}
    guard = found["sustained_status_ratio"]
    assert guard["type"] == "probe" and guard["mod"] == "chaosmem.safeguards.probes"
    assert {a["name"] for a in guard["arguments"]} >= {"status", "duration"}


def test_signals_during_the_restore_wait_until_it_is_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Inside ``chaos run``, chaoslib turns SIGTERM into InterruptExecution and SIGUSR1 (a
    safeguard) into SystemExit wherever the main thread is; while the control restores, they
    wait: the restore runs to its end, chaoslib's handlers come back after."""
    import signal
    import time

    from chaoslib.exit import exit_signals

    from chaosmem.safeguards.trip import holding_exits

    steps: list[str] = []
    with exit_signals():
        chaoslib_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
        with holding_exits():
            steps.append("limit restored")
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)  # the handlers run between bytecodes: they have run by now
            steps.append("stressor stopped")
        assert {s: signal.getsignal(s) for s in chaoslib_handlers} == chaoslib_handlers
        with pytest.raises(SystemExit):  # outside the restore, a guard still ends the run
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
    assert steps == ["limit restored", "stressor stopped"]
    assert "SIGTERM, SIGUSR1 arrived while the run was being restored" in caplog.text
