"""The replayer against a real loopback server that records what arrives.

Activities are called as ``chaos run`` calls them: keyword arguments and a configuration dict.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from chaosmem.traffic.actions import replay_traffic
from chaosmem.traffic.probes import replay_summary, status_ratio
from chaosmem.traffic.results import REQUEST_RECORD, latest_id, read_requests, read_seconds
from tests.traffic_fixtures import REQUESTS, write_gor, write_har, write_jsonl, write_timed_gor
from tests.traffic_server import RecordingServer, refused_url


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"chaosmem_state_dir": str(tmp_path / "state")}


def _delivered(server: RecordingServer) -> list[tuple[str, str, bytes]]:
    return sorted((a.method, a.target, a.body) for a in server.arrived)


EXPECTED = sorted((m, t, b) for m, t, _h, b in REQUESTS)


@pytest.mark.parametrize("name", ["a.gor", "a.gor.gz", "a.har", "a.jsonl"])
def test_every_request_arrives_once_intact_with_host_rewritten(
    tmp_path: Path, config: dict[str, Any], name: str
) -> None:
    writer = {"gor": write_gor, "gz": write_gor, "har": write_har, "jsonl": write_jsonl}[
        name.rsplit(".", 1)[1]
    ]
    capture = writer(tmp_path / name)
    with RecordingServer() as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, speed=100, configuration=config
        )
        arrived = server.arrived
    assert _delivered(server) == EXPECTED  # types 2/3 were not sent: exactly the requests
    host = server.url.removeprefix("http://")
    assert {a.headers["host"] for a in arrived} == {host}
    for a in arrived:
        original = next(h for m, t, h, _b in REQUESTS if (m, t) == (a.method, a.target))
        for key, value in original.items():
            assert a.headers[key.lower()] == value
    assert summary["sent"] == summary["completed"] == len(REQUESTS)
    assert summary["status"] == {"200": len(REQUESTS)}
    assert summary["capture"]["malformed"] == 0


def test_speed_10_replays_a_10_second_capture_in_1_second(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "ten.gor", count=101, span_s=10.0)
    with RecordingServer() as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, speed=10, configuration=config
        )
    print(
        f"speed 10: {summary['duration_s']:.3f}s for a 10 s capture; "
        f"schedule lag p99 {summary['lag_ms']['p99']} ms, max {summary['lag_ms']['max']} ms"
    )
    assert summary["completed"] == 101
    # The replay's own measure (first scheduled send to last response), not the test's clock:
    # the last request is not sent before its time (how late it ends depends on the machine).
    assert summary["duration_s"] >= 0.99
    assert summary["lag_ms"]["p99"] is not None
    # Recorded spacing is kept: the last request was scheduled 1 s after the first.
    records = list(
        read_requests(
            Path(config["chaosmem_state_dir"]) / "replays" / summary["replay_id"] / "requests.bin"
        )
    )
    assert len(records) == 101
    assert max(r[0] for r in records) == pytest.approx(1_000_000, abs=2)


def test_status_ratio_of_503(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "ten.gor", count=10, span_s=0.1)
    with RecordingServer(status_for=lambda i: 503 if i in (2, 5, 8) else 200) as server:
        replay_traffic(
            capture=str(capture), target_url=server.url, concurrency=1, configuration=config
        )
    assert status_ratio(status=503, configuration=config) == pytest.approx(0.30)
    assert status_ratio(status="5xx", configuration=config) == pytest.approx(0.30)
    assert status_ratio(status=[200, 503], configuration=config) == pytest.approx(1.0)
    assert status_ratio(status="2xx", configuration=config) == pytest.approx(0.70)
    summary = replay_summary(configuration=config)
    assert summary["status"] == {"200": 7, "503": 3}
    assert summary["no_status"] == 0


def test_hanging_target_times_out_on_time(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=20, span_s=0.2)
    with RecordingServer(mode="hang") as server:
        started = time.monotonic()
        summary = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            timeout="300ms",
            duration="1s",
            configuration=config,
        )
        took = time.monotonic() - started
    assert summary["errors"]["timeout"] == 20
    assert summary["completed"] == 0
    assert took < 2.5  # duration 1 s, each request had 0.3 s
    with pytest.raises(Exception, match="no answered request"):
        status_ratio(status=503, configuration=config)


def test_hang_is_bounded_by_duration_even_with_a_long_timeout(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=5, span_s=0.1)
    with RecordingServer(mode="hang") as server:
        started = time.monotonic()
        summary = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            timeout="1s",
            duration="0.5s",
            configuration=config,
        )
        took = time.monotonic() - started
    assert summary["errors"]["timeout"] == 5
    assert took < 2.5


def test_reset_and_refused_are_counted(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=0.1)
    with RecordingServer(mode="reset") as server:
        reset = replay_traffic(
            capture=str(capture), target_url=server.url, timeout="2s", configuration=config
        )
    assert reset["errors"]["reset"] == 10
    refused = replay_traffic(
        capture=str(capture), target_url=refused_url(), timeout="2s", configuration=config
    )
    assert refused["errors"]["refused"] == 10
    assert refused["no_status"] == 10 and refused["completed"] == 0
    seconds = read_seconds(Path(config["chaosmem_state_dir"]), refused["replay_id"])
    assert sum(s["errors"].get("refused", 0) for s in seconds) == 10


def test_memory_stays_bounded_against_a_refusing_target(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=1000, span_s=1.0)
    tracemalloc.start()
    try:
        summary = replay_traffic(
            capture=str(capture), target_url=refused_url(), rate=4000, loop=True, duration="2s",
            timeout="200ms", configuration=config,
        )  # fmt: skip
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["errors"]["refused"] >= 1000
    # Per-request records go to disk each second; nothing grows with the number of requests.
    assert peak < 16 * 1024 * 1024, peak


def test_back_pressure_delays_but_never_drops(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=30, span_s=0.03)
    with RecordingServer(delay=0.02) as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, concurrency=2, configuration=config
        )
        arrived = len(server.arrived)
    assert arrived == 30 == summary["completed"]
    assert summary["lag_ms"]["max"] > 100  # 30 requests of 20 ms on 2 connections: ~300 ms late


def test_headers_filters_and_rate(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_gor(tmp_path / "a.gor")
    with RecordingServer() as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url + "/prefix", rate=200, configuration=config,
            headers={"X-Chaos": "yes", "Accept": "text/plain"}, remove_headers=["X-Trace"],
            methods=["GET", "post"], path_pattern=r"^/(orders|search)",
        )  # fmt: skip
        arrived = server.arrived
    assert sorted(a.target for a in arrived) == [
        "/prefix/orders",
        "/prefix/orders?id=1&sort=desc",
        "/prefix/search?q=caf%C3%A9&page=2",
    ]
    assert all(
        a.headers["x-chaos"] == "yes" and a.headers["accept"] == "text/plain" for a in arrived
    )
    assert all("x-trace" not in a.headers and "connection" not in a.headers for a in arrived)
    assert summary["filtered"] == 3


def test_loop_repeats_until_duration_and_results_layout(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=0.09)
    with RecordingServer() as server:
        summary = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            loop=True,
            duration="2.5s",
            configuration=config,
        )
        arrived = len(server.arrived)
    assert summary["passes"] > 5
    assert summary["state"] == "done"
    assert arrived == summary["completed"] == summary["sent"]
    state = Path(config["chaosmem_state_dir"])
    assert latest_id(state) == summary["replay_id"]
    out = state / "replays" / summary["replay_id"]
    assert json.loads((out / "summary.json").read_text())["replay_id"] == summary["replay_id"]
    seconds = read_seconds(state, summary["replay_id"])
    assert len(seconds) >= 2
    assert {"t", "sent", "completed", "status", "errors", "lag_p99_ms"} <= set(seconds[0])
    assert sum(s["sent"] for s in seconds) == summary["sent"]
    assert (out / "requests.bin").stat().st_size == summary["sent"] * REQUEST_RECORD.size


def test_malformed_records_do_not_stop_the_replay(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = write_gor(tmp_path / "a.gor")
    data = capture.read_bytes().replace(b"DELETE /orders/7 HTTP/1.1", b"DELETE /orders/7 HTTP/9")
    capture.write_bytes(data)
    with RecordingServer() as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, speed=100, configuration=config
        )
    assert summary["completed"] == len(REQUESTS) - 1
    assert summary["capture"]["malformed"] == 1
    assert summary["capture"]["malformed_samples"][0]["position"].startswith("a.gor: record ")


def test_head_responses_end_at_their_headers(tmp_path: Path, config: dict[str, Any]) -> None:
    capture = tmp_path / "head.jsonl"
    capture.write_text(
        "".join(
            json.dumps({"time": i / 100, "method": "HEAD", "path": f"/h{i}"}) + "\n"
            for i in range(5)
        )
    )
    with RecordingServer() as server:
        # The server announces Content-Length: 3 and sends no body, as HEAD requires.
        summary = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            concurrency=1,
            timeout="2s",
            configuration=config,
        )
    assert summary["status"] == {"200": 5}
    assert summary["latency_ms"]["max"] < 1000
