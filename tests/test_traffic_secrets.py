"""No secret in a journal: replay options are masked in what activities return and write (9.6).

A real background worker replays against a real server: the server must still receive the real
Authorization header and URL credentials, while nothing chaosmem returns or writes holds them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaosmem.secrets import REDACTED, redact_url
from chaosmem.traffic.actions import replay_traffic
from chaosmem.traffic.probes import replay_summary
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer

TOKEN = "Bearer s3cr3t-t0ken-value"
PASSWORD = "hunter2-pass"


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://alice:{PASSWORD}@{parts.netloc}{parts.path}"


def _everything_written(state: Path) -> str:
    """Every file of the state dir but the compiled schedule cache, which holds the requests as
    they are sent (set headers included) so workers can replay them without re-reading."""
    cache = state / "cache"
    return "\n".join(
        p.read_text(errors="replace")
        for p in sorted(state.rglob("*"))
        if p.is_file() and cache not in p.parents
    )


def test_foreground_and_background_replays_mask_credentials(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=5, span_s=0.1)
    directory = Path(state["chaosmem_state_dir"])
    with RecordingServer() as server:
        url = _with_password(server.url)
        headers = {"Authorization": TOKEN, "X-Api-Key": "k3y-value-9", "X-Trace": "visible"}
        done = replay_traffic(
            capture=str(capture), target_url=url, headers=headers, configuration=state
        )
        started = replay_traffic(
            capture=str(capture), target_url=url, headers=headers, wait=False, configuration=state
        )
        background = replay_summary(replay_id=started["replay_id"], wait="20s", configuration=state)
        arrived = server.arrived
    # the target got the real credentials, from both replays (the worker through its stdin)
    assert len(arrived) == 10
    for request in arrived:
        assert request.headers["authorization"] == TOKEN
        assert request.headers["x-api-key"] == "k3y-value-9"
        assert request.headers["x-trace"] == "visible"
    for result in (done, started, background):
        text = json.dumps(result)
        for secret in (TOKEN, PASSWORD, "k3y-value-9"):
            assert secret not in text
    assert done["options"]["headers"] == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "X-Trace": "visible",
    }
    assert f"alice:{REDACTED}@" in done["options"]["target_url"]
    written = _everything_written(directory)  # spec.json, summary.json, ledger, logs
    for secret in (TOKEN, PASSWORD, "k3y-value-9"):
        assert secret not in written
    assert "summary.json" in {p.name for p in directory.rglob("*")}
    assert "spec.json" in {p.name for p in directory.rglob("*")}


def test_redact_url() -> None:
    assert (
        redact_url("http://a:b@h:1/p?token=x&q=1")
        == f"http://a:{REDACTED}@h:1/p?token={REDACTED}&q=1"
    )
    assert redact_url("http://h/p?q=1") == "http://h/p?q=1"
    assert redact_url("http://user@h/") == "http://user@h/"


def test_a_bare_stop_in_a_run_stops_only_this_runs_replays(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    """One run never undoes another's change (issue 9.3): B's bare stop_traffic_replay() used
    to stop A's background replay too."""
    from chaosmem.ledger import set_current_run
    from chaosmem.traffic.actions import stop_traffic_replay
    from chaosmem.traffic.background import worker_pid

    capture = write_timed_gor(tmp_path / "t.gor", count=20, span_s=1.0)
    directory = Path(state["chaosmem_state_dir"])
    try:
        with RecordingServer() as server:
            set_current_run("run-A")
            a = replay_traffic(
                capture=str(capture),
                target_url=server.url,
                loop=True,
                duration="60s",
                wait=False,
                configuration=state,
            )
            set_current_run("run-B")
            b = replay_traffic(
                capture=str(capture),
                target_url=server.url,
                loop=True,
                duration="60s",
                wait=False,
                configuration=state,
            )
            stopped = stop_traffic_replay(configuration=state)
            assert list(stopped["summaries"]) == [b["replay_id"]]
            assert worker_pid(directory, a["replay_id"]) == a["pid"]  # A's replay still runs
            assert worker_pid(directory, b["replay_id"]) is None
            set_current_run(None)  # outside a run: every open one
            assert list(stop_traffic_replay(configuration=state)["summaries"]) == [a["replay_id"]]
    finally:
        set_current_run(None)
        stop_traffic_replay(configuration=state)


def test_sharded_replays_get_credentials_on_stdin_only(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    """Two shard workers: the target gets the real header, no shard's spec.json holds it."""
    capture = write_timed_gor(tmp_path / "t.gor", count=8, span_s=0.1)
    directory = Path(state["chaosmem_state_dir"])
    with RecordingServer() as server:
        done = replay_traffic(
            capture=str(capture),
            target_url=_with_password(server.url),
            headers={"Authorization": TOKEN},
            workers=2,
            configuration=state,
        )
        arrived = server.arrived
    assert len(arrived) == 8
    assert all(a.headers["authorization"] == TOKEN for a in arrived)
    specs = list(directory.rglob("shards/*/spec.json"))
    assert len(specs) == 2
    for path in specs:
        text = path.read_text()
        assert TOKEN not in text and PASSWORD not in text
    assert TOKEN not in json.dumps(done) and PASSWORD not in json.dumps(done)
