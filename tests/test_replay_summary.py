"""Replay actions give a one-line ``summary``, and the report's method table leads with it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from chaosmem.report import build_report, render
from chaosmem.traffic.oneline import replay_line
from tests.chaos_run import chaos_run
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer


def _action(name: str, func: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "action",
        "name": name,
        "provider": {
            "type": "python",
            "module": "chaosmem.traffic.actions",
            "func": func,
            "arguments": arguments,
        },
    }


def test_the_method_table_shows_each_replays_line(tmp_path: Path, state: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "ten.gor", count=10, span_s=0.1)
    env = {"CHAOSMEM_STATE_DIR": state["chaosmem_state_dir"]}
    common = {"capture": str(capture), "concurrency": 1, "headers": {"Authorization": "t0psecret"}}
    slow = write_timed_gor(tmp_path / "slow.gor", count=300, span_s=30)  # still going at "stop"
    with (
        RecordingServer(status_for=lambda i: 503 if i in (2, 5, 8) else 200) as server,
        RecordingServer() as steady,
    ):
        experiment = {
            "title": "replay rows",
            "description": "replays in the foreground and in the background",
            "controls": [
                {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
            ],
            "steady-state-hypothesis": {"title": "none", "probes": []},
            "method": [
                _action("replay", "replay_traffic", {**common, "target_url": server.url}),
                _action(
                    "replay-bg",
                    "replay_traffic",
                    {**common, "capture": str(slow), "target_url": steady.url, "wait": False},
                ),
                {
                    "type": "probe",
                    "name": "pause",
                    "provider": {"type": "process", "path": "sleep", "arguments": "1"},
                },
                _action("stop", "stop_traffic_replay", {}),
            ],
        }
        code, journal = chaos_run(tmp_path / "run", "rows", experiment, env)
    assert code == 0, journal.read_text()
    runs = json.loads(journal.read_text())["run"]
    foreground, background, _, stop = (r["output"] for r in runs)
    assert foreground["summary"] == replay_line(foreground)
    assert re.fullmatch(
        r"replay \S+ done: 10 sent, 10 answered \(2xx 7, 5xx 3\), 503 ratio 30\.0%, "
        r"[\d.]+ req/s, latency p99 [\d.]+ ms, lag p99 [\d.]+ ms",
        foreground["summary"],
    ), foreground["summary"]
    assert background["summary"] == (
        f"replay {background['replay_id']} started in the background (pid {background['pid']})"
    )
    assert stop["summary"].startswith(f"replay {background['replay_id']} ")
    assert re.search(
        r" stopped: (\d+) sent, \1 answered \(2xx \1\), 503 ratio 0\.0%", stop["summary"]
    )

    markdown = render(build_report([journal]), "markdown")
    rows = {
        cells[2].strip(): line
        for line in markdown.splitlines()
        if line.startswith("|") and len(cells := line.split("|")) > 3
    }
    assert "t0psecret" not in markdown
    for name, output in (("replay", foreground), ("replay-bg", background), ("stop", stop)):
        row = rows[f"{name} (action)"]
        assert output["summary"].replace("|", "\\|") in row, (name, row)
        assert '{"' not in row  # no raw JSON in the table
