"""A figure describes this run: traffic probes and timeline sources never read an earlier run's.

Two runs share one state dir, as two ``chaos run``s on one CI machine do. Both unit-level (the
run id set the way the control sets it) and through real ``chaos run`` with the control.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import set_current_run
from chaosmem.timeline import Recorder
from chaosmem.traffic import results
from chaosmem.traffic.actions import replay_traffic
from chaosmem.traffic.probes import replay_summary, status_ratio
from tests.chaos_run import chaos_run
from tests.stress_support import ledgered
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer


def _replay(tmp_path: Path, config: dict[str, Any], failing: tuple[int, ...]) -> dict[str, Any]:
    capture = write_timed_gor(tmp_path / "ten.gor", count=10, span_s=0.1)
    with RecordingServer(status_for=lambda i: 503 if i in failing else 200) as server:
        summary: dict[str, Any] = replay_traffic(
            capture=str(capture), target_url=server.url, concurrency=1, configuration=config
        )
    return summary


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new ``chaos run`` process: no replay started here yet."""
    monkeypatch.setattr(results, "_started_here", {})


def test_probes_read_this_runs_replay_not_an_earlier_one(
    tmp_path: Path, state: dict[str, Any], fresh_process: None
) -> None:
    try:
        set_current_run("run-a")
        _replay(tmp_path, state, failing=())
        assert status_ratio(status=503, configuration=state) == 0.0

        set_current_run("run-b")
        with pytest.raises(ChaosmemError, match=r"no replay has run in this run \(run-b"):
            status_ratio(status=503, configuration=state)
        with pytest.raises(ChaosmemError, match="no replay has run in this run"):
            replay_summary(configuration=state)
        _replay(tmp_path, state, failing=(2, 5, 8))
        assert status_ratio(status=503, configuration=state) == pytest.approx(0.30)

        set_current_run("run-a")  # run A still reads its own replay
        assert status_ratio(status=503, configuration=state) == 0.0
    finally:
        set_current_run(None)


def test_outside_a_run_only_this_processes_replay(
    tmp_path: Path, state: dict[str, Any], fresh_process: None
) -> None:
    set_current_run("run-a")
    _replay(tmp_path, state, failing=())
    set_current_run(None)
    results._started_here.clear()  # a new process: the state dir's latest is not ours
    with pytest.raises(ChaosmemError, match="no replay has run in this process"):
        status_ratio(status=503, configuration=state)
    summary = _replay(tmp_path, state, failing=(1,))
    assert replay_summary(configuration=state)["replay_id"] == summary["replay_id"]
    assert status_ratio(status=503, configuration=state) == pytest.approx(0.10)


def test_a_bad_run_id_never_becomes_a_path(state: dict[str, Any], fresh_process: None) -> None:
    try:
        set_current_run("../../etc")
        with pytest.raises(ChaosmemError, match="not a valid run id"):
            status_ratio(status=503, configuration=state)
    finally:
        set_current_run(None)


def test_timeline_stress_and_traffic_count_only_this_run(
    tmp_path: Path, state: dict[str, Any], fresh_process: None
) -> None:
    base = Path(state["chaosmem_state_dir"])
    stress = base / "stress"
    stress.mkdir(parents=True)
    # An earlier run's stressors, one still holding memory when it was last written.
    for index in range(5):
        (stress / f"old{index}.json").write_text(
            json.dumps({"bytes": 0 if index else 1 << 20, "run": "run-old", "phase": "done"})
        )
    (stress / "ours.json").write_text(json.dumps({"bytes": 3 << 20, "run": "run-new"}))
    ledgered(base, "run-old", [f"old{index}" for index in range(5)])
    ledgered(base, "run-new", ["ours"])
    set_current_run("run-old")
    _replay(tmp_path, state, failing=())  # the state dir's "latest" is the old run's replay
    try:
        set_current_run("run-new")
        recorder = Recorder(directory=tmp_path / "timeline", targets=[], configuration=state)
        recorder.start()
        records = recorder.stop()
    finally:
        set_current_run(None)
    samples = [r for r in records if r["kind"] == "sample"]
    assert samples and all(s["stress"] == {"bytes": 3 << 20, "stressors": 1} for s in samples)
    assert not any("traffic" in s for s in samples)


def _experiment(url: str, capture: Path) -> dict[str, Any]:
    return {
        "title": "the 503 ratio of this run's replay",
        "description": "run-scoped status ratio",
        "controls": [
            {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
        ],
        "steady-state-hypothesis": {
            "title": "few 503s",
            "probes": [
                {
                    "type": "probe",
                    "name": "503-ratio",
                    "tolerance": {"type": "range", "range": [0.0, 0.1]},
                    "provider": {
                        "type": "python",
                        "module": "chaosmem.traffic.probes",
                        "func": "status_ratio",
                        "arguments": {"status": 503},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "replay",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.traffic.actions",
                    "func": "replay_traffic",
                    "arguments": {
                        "capture": str(capture),
                        "target_url": url,
                        "concurrency": 1,
                    },
                },
            }
        ],
    }


def _ratio_after(journal: Path) -> Any:
    data = json.loads(journal.read_text())
    return data["steady_states"]["after"]["probes"][0]


def test_chaos_run_twice_on_one_state_dir(tmp_path: Path, state: dict[str, Any]) -> None:
    """Run 1 replays 0% 503s; run 2 gets 30% 503s and must see 0.30, not run 1's 0.0."""
    capture = write_timed_gor(tmp_path / "ten.gor", count=10, span_s=0.1)
    env = {"CHAOSMEM_STATE_DIR": state["chaosmem_state_dir"]}
    strategy = ["--hypothesis-strategy", "after-method-only"]
    with (
        RecordingServer() as good,
        RecordingServer(status_for=lambda i: 503 if i in (2, 5, 8) else 200) as bad,
    ):
        code, journal = chaos_run(
            tmp_path / "one", "one", _experiment(good.url, capture), env, extra=strategy
        )
        assert code == 0, journal.read_text()
        assert _ratio_after(journal)["output"] == 0.0
        code, journal = chaos_run(
            tmp_path / "two", "two", _experiment(bad.url, capture), env, extra=strategy
        )
    probe = _ratio_after(journal)
    assert probe["output"] == pytest.approx(0.30)
    assert probe["tolerance_met"] is False
    assert code != 0
    # Without a replay in the run, the "before" check has nothing to read and says so.
    code, journal = chaos_run(tmp_path / "three", "three", _experiment(bad.url, capture), env)
    before = json.loads(journal.read_text())["steady_states"]["before"]["probes"][0]
    assert before["status"] == "failed"
    assert "no replay has run in this run" in "".join(before["exception"])


def _recorded_traffic(
    tmp_path: Path, state: dict[str, Any], name: str, count: int
) -> list[dict[str, Any]]:
    """A recording around one real replay of ``count`` requests, as one run's timeline sees it."""
    recorder = Recorder(directory=tmp_path / name, interval=0.1, targets=[], configuration=state)
    recorder.start()
    capture = write_timed_gor(tmp_path / f"{name}.gor", count=count, span_s=0.2)
    with RecordingServer() as server:
        replay_traffic(
            capture=str(capture), target_url=server.url, concurrency=4, configuration=state
        )
    records = recorder.stop()
    return [r["traffic"] for r in records if r["kind"] == "sample" and "traffic" in r]


@pytest.mark.parametrize("in_a_run", [True, False], ids=["in-a-run", "outside-a-run"])
def test_back_to_back_runs_count_only_their_own_replay(
    tmp_path: Path, state: dict[str, Any], fresh_process: None, in_a_run: bool
) -> None:
    """Two runs on one state dir well under a second apart: the second run's traffic rows count
    its own 30 requests, never the first replay's last second (which ended just before)."""
    try:
        set_current_run("run-one" if in_a_run else None)
        first = _recorded_traffic(tmp_path, state, "one", count=50)
        set_current_run("run-two" if in_a_run else None)
        second = _recorded_traffic(tmp_path, state, "two", count=30)
    finally:
        set_current_run(None)
    assert sum(t["sent"] for t in first) == 50
    assert sum(t["sent"] for t in second) == 30
    assert sum(t["completed"] for t in second) == 30
    assert {t["replay"] for t in first}.isdisjoint({t["replay"] for t in second})
