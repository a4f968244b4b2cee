"""The replayer against a real loopback server that records what arrives.

Activities are called as ``chaos run`` calls them: keyword arguments and a configuration dict.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from chaosmem.traffic.actions import replay_traffic
from chaosmem.traffic.probes import replay_summary, status_ratio
from chaosmem.traffic.results import (
    ERROR_CODES,
    REQUEST_RECORD,
    latest_id,
    read_requests,
    read_seconds,
)
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


def _records(config: dict[str, Any], summary: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    out = Path(config["chaosmem_state_dir"]) / "replays" / summary["replay_id"]
    return list(read_requests(out / "requests.bin"))


def test_hanging_target_times_out_each_request(tmp_path: Path, config: dict[str, Any]) -> None:
    """The server holds every request for 60 s: each one ends as a ``timeout`` of its own.

    Without the 300 ms timeout the server would end them itself (a closed connection, a
    ``reset``); the replay's own measure can't end before the first timeout was due.
    """
    capture = write_timed_gor(tmp_path / "t.gor", count=20, span_s=0.2)
    with RecordingServer(mode="hang") as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, timeout="300ms", configuration=config
        )
    assert summary["errors"]["timeout"] == summary["sent"] == 20
    assert summary["completed"] == 0 and summary["state"] == "done"
    assert summary["duration_s"] >= 0.3
    codes = {code for _s, _sent, _lat, code in _records(config, summary)}
    assert codes == {ERROR_CODES["timeout"]}
    with pytest.raises(Exception, match="no answered request"):
        status_ratio(status=503, configuration=config)


def test_hang_is_bounded_by_duration_even_with_a_long_timeout(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """Nothing is sent after ``duration``; what is in flight then still gets its timeout."""
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=1.8)  # one each 200 ms
    with RecordingServer(mode="hang") as server:
        summary = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            timeout="1s",
            duration="0.5s",
            configuration=config,
        )
        arrived = len(server.arrived)
    records = _records(config, summary)
    # only the requests due at 0, 200 and 400 ms may go (fewer on a slow machine), none later
    assert summary["sent"] == len(records) <= 3 and arrived <= 3
    assert all(sent_us < 500_000 for _s, sent_us, _lat, _code in records)
    assert summary["errors"]["timeout"] == summary["sent"]  # given their timeout, not cancelled
    assert summary["errors"]["cancelled"] == 0 and summary["completed"] == 0
    assert summary["state"] == "done"


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


def _refused_replay_peak(tmp_path: Path, count: int) -> tuple[dict[str, Any], int]:
    """Replay ``count`` requests to a refusing target; the summary and the traced memory peak."""
    capture = write_timed_gor(tmp_path / f"t{count}.gor", count=count, span_s=1.0)
    config = {"chaosmem_state_dir": str(tmp_path / f"state{count}")}
    tracemalloc.start()
    try:
        summary = replay_traffic(
            capture=str(capture),
            target_url=refused_url(),
            rate=8000,
            timeout="60s",
            configuration=config,
        )  # fmt: skip  (NB: a long timeout: a refusal is a refusal, however late it is seen)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return summary, peak


def test_memory_stays_bounded_against_a_refusing_target(tmp_path: Path) -> None:
    """A fixed number of requests, not a time box: 16x the requests, about the same memory."""
    small, small_peak = _refused_replay_peak(tmp_path, 1000)
    large, large_peak = _refused_replay_peak(tmp_path, 16000)
    assert small["errors"]["refused"] == small["sent"] == 1000
    assert large["errors"]["refused"] == large["sent"] == 16000
    assert large["completed"] == 0 and large["no_status"] == 16000
    # Per-request records go to disk each second; nothing grows with the number of requests
    # (15000 more requests holding even 140 bytes each would add 2 MiB).
    assert large_peak < 16 * 1024 * 1024, large_peak
    assert large_peak - small_peak < 2 * 1024 * 1024, (small_peak, large_peak)


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
    assert (
        summary["passes"] >= 2
    )  # a 0.09 s capture looped over 2.5 s (about 27 on an idle machine)
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
    # Had the replayer waited for the announced body, the server (keeping the connection open)
    # would have let each request run into its 2 s timeout: a ``timeout`` error, not a 200.
    assert summary["status"] == {"200": 5}
    assert summary["completed"] == 5 and summary["errors"]["timeout"] == 0


def test_connections_for_the_first_moments_open_before_the_clock(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    burst = write_timed_gor(tmp_path / "burst.gor", count=12, span_s=0.001)
    slow = write_timed_gor(tmp_path / "slow.gor", count=3, span_s=0.2)
    with RecordingServer() as server:
        # 12 requests due in the first millisecond, 5 connections at most: all 5 open first
        first = replay_traffic(
            capture=str(burst), target_url=server.url, concurrency=5, configuration=config
        )
        # one request in the first 5 ms: one connection
        second = replay_traffic(capture=str(slow), target_url=server.url, configuration=config)
    assert first["warmed_connections"] == 5 and first["completed"] == 12
    assert second["warmed_connections"] == 1 and second["completed"] == 3
    # a target that refuses: nothing opens ahead, and every request still reports the refusal
    refused = replay_traffic(capture=str(burst), target_url=refused_url(), configuration=config)
    assert refused["warmed_connections"] == 0
    assert refused["errors"]["refused"] == refused["sent"] == 12
