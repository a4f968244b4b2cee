"""Background replays: a worker process on the ledger that stops, and dies with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.ledger import Ledger
from chaosmem.traffic.actions import replay_traffic, stop_traffic_replay
from chaosmem.traffic.background import LEDGER_KIND, worker_pid
from chaosmem.traffic.probes import replay_summary, status_ratio
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"chaosmem_state_dir": str(tmp_path / "state")}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


HANG = 120.0  # a hang guard, not a speed figure: long replays here last 10 minutes


def _wait(predicate: Any, seconds: float = HANG) -> bool:
    """Whether ``predicate()`` came to hold before the hang guard ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_background_replay_runs_and_is_stopped(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=50, span_s=1.0)
    state = Path(config["chaosmem_state_dir"])
    with RecordingServer() as server:
        started = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            loop=True,
            duration="10m",
            wait=False,
            configuration=config,
        )
        pid = started["pid"]
        try:
            assert _alive(pid)
            [entry] = Ledger(state).read().open(kind=LEDGER_KIND)
            assert entry.target["replay_id"] == started["replay_id"]
            assert _wait(lambda: len(server.arrived) >= 20)
            # the summary of a running replay is refreshed once a second
            assert _wait(lambda: replay_summary(configuration=config)["completed"] >= 20)
            assert status_ratio(status=200, configuration=config) == 1.0
            assert replay_summary(configuration=config)["state"] == "running"
            result = stop_traffic_replay(configuration=config)
        finally:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not _alive(pid)
    assert "stopped" in result["stopped"][0]
    summary = result["summaries"][started["replay_id"]]
    assert summary["state"] == "stopped"
    assert summary["completed"] >= 20
    assert Ledger(state).read().open(kind=LEDGER_KIND) == []
    assert stop_traffic_replay(configuration=config)["stopped"] == [
        "no background replay was running"
    ]


def test_background_replay_ends_by_itself_and_closes_its_entry(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=0.2)
    state = Path(config["chaosmem_state_dir"])
    with RecordingServer() as server:
        started = replay_traffic(
            capture=str(capture), target_url=server.url, wait=False, configuration=config
        )
        summary = replay_summary(wait="120s", configuration=config)
    assert summary["state"] == "done" and summary["completed"] == 10
    assert _wait(lambda: not _alive(started["pid"]))
    assert _wait(lambda: Ledger(state).read().open(kind=LEDGER_KIND) == [])


def test_rollback_handler_stops_a_replay_left_running(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=1.0)
    state = Path(config["chaosmem_state_dir"])
    with RecordingServer() as server:
        started = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            loop=True,
            duration="10m",
            wait=False,
            configuration=config,
        )
        try:
            assert len(Ledger(state).read().open(kind=LEDGER_KIND)) == 1
            chaosmem = [str(Path(sys.executable).parent / "chaosmem"), "rollback"]
            done = subprocess.run(
                [*chaosmem, "--state-dir", str(state)], capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            assert f"replay {started['replay_id']} (pid {started['pid']}) stopped" in done.stdout
            assert _wait(lambda: not _alive(started["pid"]))
            assert worker_pid(state, started["replay_id"]) is None
            assert Ledger(state).read().open(kind=LEDGER_KIND) == []
            again = subprocess.run(
                [*chaosmem, "--state-dir", str(state)], capture_output=True, text=True
            )
            assert again.returncode == 0 and "nothing to roll back" in again.stdout  # idempotent
        finally:
            if _alive(started["pid"]):
                os.kill(started["pid"], signal.SIGKILL)


def test_worker_dies_with_its_parent(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=1.0)
    with RecordingServer() as server:
        script = textwrap.dedent(
            f"""
            import sys, time
            from chaosmem.traffic.actions import replay_traffic
            r = replay_traffic(capture={str(capture)!r}, target_url={server.url!r}, loop=True,
                               duration="10m", wait=False, configuration={config!r})
            print(r["pid"], r["replay_id"], flush=True)
            time.sleep(600)
            """
        )
        parent = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        worker, replay_id = 0, ""
        with parent:  # closes the pipe and reaps the parent (ended below, whatever happens)
            try:
                assert parent.stdout is not None
                pid, replay_id = parent.stdout.readline().decode().split()
                worker = int(pid)
                assert _alive(worker)
                parent.kill()  # SIGKILL: no cleanup code of the parent runs
                parent.wait(10)
                assert _wait(lambda: not _alive(worker)), "the worker outlived its parent"
            finally:
                if parent.poll() is None:
                    parent.kill()
                    parent.wait(10)
                if worker and _alive(worker):
                    os.kill(worker, signal.SIGKILL)
    # Another process's replay: this one names it (probes never fall back to the latest).
    summary = replay_summary(replay_id=replay_id, configuration=config)
    assert summary["state"] == "stopped"  # it got SIGTERM and still wrote its summary


def test_worker_enforces_its_own_deadline(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=0.5)
    with RecordingServer() as server:
        started = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            loop=True,
            duration="1s",
            wait=False,
            configuration=config,
        )
        try:
            assert _wait(lambda: not _alive(started["pid"]))
        finally:
            if _alive(started["pid"]):
                os.kill(started["pid"], signal.SIGKILL)
    assert replay_summary(configuration=config)["state"] == "done"
