"""Replay at scale: compiled schedules, worker processes on one clock, sessions kept in order.

The held-out check of issue 14 is :func:`test_interleaved_sessions_arrive_in_order_once_with_2_workers`:
a real loopback server records what arrives; two worker processes replay interleaved
sessions; each session's requests must arrive in recorded order, exactly once, and the merged
summary must count what the server saw.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.errors import InvalidArgument
from chaosmem.targets.cgroup import Cgroup
from chaosmem.traffic.actions import replay_traffic, stop_traffic_replay
from chaosmem.traffic.capture import gor_bytes, write_gor_record
from chaosmem.traffic.compile import compile_capture
from chaosmem.traffic.histogram import BUCKET_OF, Histogram, bucket
from chaosmem.traffic.options import ReplayOptions, auto_workers, available_cores, parse_options
from chaosmem.traffic.probes import replay_summary, status_ratio
from chaosmem.traffic.results import REQUEST_RECORD, read_seconds
from chaosmem.traffic.schedule import Schedule
from tests.traffic_fixtures import T0_NS, write_timed_gor
from tests.traffic_server import RecordingServer

REPO = Path(__file__).resolve().parent.parent
#: A hang guard, not a speed figure; the looping replays here are asked to last 10 minutes.
HANG = 120


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"chaosmem_state_dir": str(tmp_path / "state")}


def _sessions_capture(path: Path, *, sessions: int, per_session: int, seed: int = 7) -> Path:
    """Requests of ``sessions`` sessions interleaved at random, 1 ms apart on the recorded clock;
    each names its session and its place in it (``/s/<session>/<n>``)."""
    order = [s for s in range(sessions) for _ in range(per_session)]
    random.Random(seed).shuffle(order)
    seen = [0] * sessions
    records = []
    for i, session in enumerate(order):
        n = seen[session]
        seen[session] += 1
        raw = (
            f"GET /s/{session}/{n} HTTP/1.1\r\nHost: prod\r\nX-Session-Id: user-{session}\r\n"
            f"Cookie: theme=dark; sid=c{session}\r\n\r\n"
        ).encode()
        records.append((1, T0_NS + i * 1_000_000, raw))
    path.write_bytes(gor_bytes(records))
    return path


def _replay_dir(config: dict[str, Any], summary: dict[str, Any]) -> Path:
    return Path(config["chaosmem_state_dir"]) / "replays" / summary["replay_id"]


# -- the held-out check --------------------------------------------------------------------------


def test_interleaved_sessions_arrive_in_order_once_with_2_workers(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    sessions, per_session = 40, 25
    capture = _sessions_capture(
        tmp_path / "sessions.gor", sessions=sessions, per_session=per_session
    )
    with RecordingServer(delay=0.001) as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, rate=3000, concurrency=16,
            session_key="X-Session-Id", workers=2, configuration=config,
        )  # fmt: skip
        arrived = server.arrived
    total = sessions * per_session
    by_session: dict[str, list[int]] = {}
    for request in arrived:
        _, _s, session, n = request.target.split("/")
        assert request.headers["x-session-id"] == f"user-{session}"
        by_session.setdefault(session, []).append(int(n))
    # each session's requests in recorded order, each exactly once
    assert by_session == {str(s): list(range(per_session)) for s in range(sessions)}
    # the merged summary counts exactly what the server saw
    assert len(arrived) == total
    assert summary["sent"] == summary["completed"] == total
    assert summary["status"] == {"200": total}
    assert summary["workers"] == 2
    assert summary["state"] == "done"
    # both workers did work, and a session never crossed from one to the other
    out = _replay_dir(config, summary)
    shard_sent = [
        json.loads((out / "shards" / str(n) / "summary.json").read_text())["sent"] for n in (0, 1)
    ]
    assert sum(shard_sent) == total and min(shard_sent) > 0
    seconds = read_seconds(Path(config["chaosmem_state_dir"]), summary["replay_id"])
    assert sum(s["sent"] for s in seconds) == total
    assert sum(s["status"].get("200", 0) for s in seconds) == total
    assert (out / "requests.bin").stat().st_size == total * REQUEST_RECORD.size
    # the probes read the one merged replay
    assert status_ratio(status=200, configuration=config) == pytest.approx(1.0)
    assert replay_summary(configuration=config)["completed"] == total


def test_sharded_replay_counts_statuses_and_errors_like_one_process(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=200, span_s=0.2)
    with RecordingServer(status_for=lambda i: 503 if i % 4 == 0 else 200) as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, workers=2, configuration=config
        )
        arrived = len(server.arrived)
    assert arrived == 200 == summary["completed"]
    assert summary["status"] == {"200": 150, "503": 50}
    assert status_ratio(status=503, configuration=config) == pytest.approx(0.25)
    # percentiles come from merged buckets: there is one per answered request
    assert summary["latency_ms"]["p99"] is not None
    hist = json.loads((_replay_dir(config, summary) / "summary.json").read_text())["histograms"]
    assert Histogram.from_sparse(hist["latency_us"]).count == 200
    assert Histogram.from_sparse(hist["lag_us"]).count == 200


def test_workers_keep_one_clock(tmp_path: Path, config: dict[str, Any]) -> None:
    """A 1 s capture at speed 1 with 2 workers lasts about 1 s: neither shard restarts the clock."""
    capture = write_timed_gor(tmp_path / "t.gor", count=101, span_s=1.0)
    with RecordingServer() as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, workers=2, configuration=config
        )
        arrived = server.arrived
    assert summary["completed"] == 101
    # the last request was scheduled 1 s after the first, on the shared clock
    records = []
    for n in (0, 1):
        path = _replay_dir(config, summary) / "shards" / str(n) / "requests.bin"
        records += list(REQUEST_RECORD.iter_unpack(path.read_bytes()))
    assert max(r[0] for r in records) == pytest.approx(1_000_000, abs=2)
    # and the server saw them spread over that second, not in two bursts of half a second:
    # the k-th arrival came no earlier than the k-th due time on the agreed clock (how late it
    # came depends on the machine; ``bench/replay_throughput.py`` measures the lag)
    times = sorted(a.at for a in arrived)
    due = sorted(summary["started_at"] + r[0] / 1e6 for r in records)
    assert len(times) == len(due) == 101
    early = [
        (k, round(d - t, 3))
        for k, (t, d) in enumerate(zip(times, due, strict=True))
        if t < d - 0.01
    ]
    assert not early, f"arrived before their time (index, seconds early): {early[:5]}"


def test_a_second_replay_reuses_the_compiled_schedule(tmp_path: Path) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=50, span_s=0.5)
    cache = tmp_path / "cache"
    options = parse_options(capture=str(capture), target_url="http://127.0.0.1:9")
    first = compile_capture(options, cache=cache)
    again = compile_capture(options, cache=cache)
    assert not first.cached and again.cached and again.directory == first.directory
    assert first.requests == 50
    # speed and rate are applied while sending: same schedule
    faster = parse_options(capture=str(capture), target_url="http://127.0.0.1:9", rate=500)
    assert compile_capture(faster, cache=cache).directory == first.directory
    # other bytes on the wire, or another capture content: compiled anew
    other = parse_options(
        capture=str(capture), target_url="http://127.0.0.1:9", headers={"X-A": "1"}
    )
    assert compile_capture(other, cache=cache).directory != first.directory
    write_timed_gor(capture, count=51, span_s=0.5)
    edited = compile_capture(options, cache=cache)
    assert edited.directory != first.directory and edited.requests == 51
    # a damaged entry is compiled again, not replayed
    (edited.directory / "index.bin").write_bytes(b"\0" * 7)
    repaired = compile_capture(options, cache=cache)
    assert not repaired.cached and repaired.requests == 51


def test_compiled_requests_are_rewritten_once(tmp_path: Path) -> None:
    capture = write_timed_gor(
        tmp_path / "t.gor",
        count=3,
        span_s=0.1,
        raw=b"GET /a HTTP/1.1\r\nHost: prod\r\nConnection: close\r\nX-Trace: 1\r\n\r\n",
    )
    options = parse_options(
        capture=str(capture), target_url="http://127.0.0.1:8080/p", remove_headers=["X-Trace"]
    )
    compiled = compile_capture(options, cache=tmp_path / "cache")
    items = list(Schedule(options, compiled))
    assert [wire for _, wire, _, _, _ in items] == [
        b"GET /p/a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
    ] * 3


# -- sharding without sockets ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["X-Session-Id", "cookie:sid"])
def test_shards_partition_the_schedule_and_keep_sessions_whole(tmp_path: Path, key: str) -> None:
    capture = _sessions_capture(tmp_path / "s.gor", sessions=30, per_session=10)
    options = parse_options(
        capture=str(capture), target_url="http://127.0.0.1:9", session_key=key, rate=1000
    )
    compiled = compile_capture(options, cache=tmp_path / "cache")
    all_items = {}
    owner: dict[str, int] = {}
    for shard in range(3):
        for offset, wire, _head, _session, _retried in Schedule(
            options, compiled, shard=shard, shards=3
        ):
            path = wire.split(b" ")[1].decode()
            assert path not in all_items  # exactly once
            all_items[path] = offset
            session = path.split("/")[2]
            assert owner.setdefault(session, shard) == shard  # a session stays on one shard
    assert len(all_items) == 300
    # the rate clock is the whole schedule's: the n-th request is due at n / rate
    assert sorted(all_items.values()) == pytest.approx([n / 1000 for n in range(300)])
    assert len(set(owner.values())) == 3


def test_without_a_session_requests_go_round_robin(tmp_path: Path) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=10, span_s=0.9)
    options = parse_options(capture=str(capture), target_url="http://127.0.0.1:9")
    compiled = compile_capture(options, cache=tmp_path / "cache")
    shares = [[i[0] for i in Schedule(options, compiled, shard=s, shards=2)] for s in (0, 1)]
    assert shares[0] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert shares[1] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])


def test_har_connection_is_the_session_when_there_is_no_key(tmp_path: Path) -> None:
    entries = [
        {
            "startedDateTime": f"2024-01-01T00:00:00.{i:03d}+00:00",
            "connection": str(i % 3),
            "request": {"method": "GET", "url": f"http://x/c{i % 3}/{i}", "headers": []},
            "response": {},
        }
        for i in range(12)
    ]
    capture = tmp_path / "a.har"
    capture.write_text(json.dumps({"log": {"entries": entries}}))
    options = parse_options(capture=str(capture), target_url="http://127.0.0.1:9")
    compiled = compile_capture(options, cache=tmp_path / "cache")
    for shard in (0, 1):
        connections = {
            i[1].split(b"/")[1] for i in Schedule(options, compiled, shard=shard, shards=2)
        }
        for other in (0, 1):
            if other != shard:
                theirs = {
                    i[1].split(b"/")[1] for i in Schedule(options, compiled, shard=other, shards=2)
                }
                assert not connections & theirs


def test_a_looping_shard_with_no_share_ends(tmp_path: Path) -> None:
    capture = _sessions_capture(tmp_path / "one.gor", sessions=1, per_session=3)
    options = parse_options(
        capture=str(capture), target_url="http://127.0.0.1:9", session_key="X-Session-Id",
        loop=True, duration="1s",
    )  # fmt: skip
    compiled = compile_capture(options, cache=tmp_path / "cache")
    sizes = []
    for shard in (0, 1):
        schedule = Schedule(options, compiled, shard=shard, shards=2)
        taken = 0
        for _item in schedule:
            taken += 1
            if taken == 10:
                break
        sizes.append(taken)
    assert sorted(sizes) == [0, 10]  # one shard loops over the session, the other ends at once


# -- arguments and defaults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("workers", 0),
        ("workers", -1),
        ("workers", 1.5),
        ("workers", "many"),
        ("workers", 10**6),
        ("session_key", "X Session"),
        ("session_key", "cookie:"),
        ("session_key", "cookie:a b"),
        ("session_key", 7),
        ("session_key", ""),
    ],
)
def test_bad_workers_and_session_keys_are_refused(
    tmp_path: Path, argument: str, value: object
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=2, span_s=0.1)
    with pytest.raises(InvalidArgument, match=f"'{argument}'"):
        parse_options(capture=str(capture), target_url="http://127.0.0.1:9", **{argument: value})


def test_default_workers_follow_the_cores_and_the_work(tmp_path: Path) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=2, span_s=0.1)
    options = parse_options(capture=str(capture), target_url="http://127.0.0.1:9")
    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert auto_workers(options, 10) == 1  # a few requests: one process is quicker
    assert auto_workers(options, 10**7) == min(cores, options.concurrency)
    explicit = parse_options(capture=str(capture), target_url="http://127.0.0.1:9", workers=8)
    assert auto_workers(explicit, 3) == 3  # never more workers than requests
    narrow = parse_options(
        capture=str(capture), target_url="http://127.0.0.1:9", workers=8, concurrency=2
    )
    assert narrow.workers == 2  # each worker needs a connection


# -- histograms persist and merge ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=2**40), max_size=200),
    st.lists(st.integers(min_value=0, max_value=2**40), max_size=200),
)
def test_histograms_survive_the_file_and_merge_like_one(left: list[int], right: list[int]) -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for value in left:
        a.record(value)
        both.record(value)
    for value in right:
        b.record(value)
        both.record(value)
    merged = Histogram.from_sparse(json.loads(json.dumps(a.to_sparse())))
    merged.merge(Histogram.from_sparse(json.loads(json.dumps(b.to_sparse()))))
    for share in (0.5, 0.9, 0.99, 1.0):
        assert merged.percentile(share) == both.percentile(share)
    assert merged.count == both.count and merged.max == both.max


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=2**50), min_size=1, max_size=300),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6),
)
def test_percentiles_are_the_recorded_values_within_a_bucket(
    values: list[int], shares: list[float]
) -> None:
    hist = Histogram()
    for value in values:
        hist.record(value)
    ordered = sorted(values)
    got = hist.percentiles(shares)
    assert got == [hist.percentile(share) for share in shares]
    for share, value in zip(shares, got, strict=True):
        exact = ordered[max(1, round(share * len(values))) - 1]
        assert value is not None
        # exact below 128 µs; above, within one bucket (1/64 of a power of two)
        assert abs(value - exact) <= max(exact / 64, 0), (share, exact, value)


def test_the_bucket_table_is_the_bucket_function() -> None:
    assert len(BUCKET_OF) == 1 << 16
    assert all(BUCKET_OF[value] == bucket(value) for value in range(1 << 16))


def test_a_value_beyond_64_bits_lands_in_the_last_bucket_and_survives_the_file() -> None:
    hist = Histogram()
    hist.record(2**70)
    hist.record(5)
    again = Histogram.from_sparse(json.loads(json.dumps(hist.to_sparse())))
    assert again.count == 2 and again.max == 2**70
    assert again.percentiles([0.5, 1.0]) == hist.percentiles([0.5, 1.0]) == [5.0, 2.0**65 + 2.0**58]


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"buckets": []},
        {"buckets": {"-1": 1}},
        {"buckets": {"99999999": 1}},
        {"buckets": {"1": -3}},
        {"buckets": {"1": 1.5}},
        {"buckets": {"x": 1}},
        {"buckets": {}, "count": -1},
        {"buckets": {}, "max": float("inf")},
    ],
)
def test_a_bad_histogram_is_refused(data: Any) -> None:
    with pytest.raises(ValueError):
        Histogram.from_sparse(data)


# -- stopping ------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


@contextlib.contextmanager
def _sharded_cli_replay(tmp_path: Path, url: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``chaosmem replay --workers 2`` of a looping capture (10 minutes) in a child process, and
    its state dir; the child is killed on the way out if the test left it running."""
    capture = write_timed_gor(tmp_path / "t.gor", count=100, span_s=1.0)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chaosmem.cli", "replay", str(capture), "--target", url,
         "--loop", "--duration", "10m", "--workers", "2", "--state-dir", str(state), "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield proc, state
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None and not proc.stdout.closed:
            proc.communicate()  # reaped, pipes closed (the test had not read them)


def _sending_shard_pids(root: Path, pattern: str) -> list[int]:
    """The pids of both workers (shard order) once each has sent something."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        shards = sorted(root.glob(pattern))
        if len(shards) == 2 and all(json.loads(p.read_text()).get("sent", 0) > 0 for p in shards):
            return [json.loads(p.read_text())["pid"] for p in shards]
        time.sleep(0.1)
    raise AssertionError(f"hung: the workers did not start sending in {HANG} s")


def test_sigterm_stops_every_worker_and_writes_the_merged_summary(tmp_path: Path) -> None:
    with RecordingServer() as server, _sharded_cli_replay(tmp_path, server.url) as (proc, state):
        pids = _sending_shard_pids(state, "replays/*/shards/*/summary.json")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=HANG)
        arrived = len(server.arrived)
    summary = json.loads(out)
    assert summary["state"] == "stopped", err
    assert not any(_alive(pid) for pid in pids)
    assert summary["workers"] == 2
    # what was answered is what the server answered (a cancelled one may have arrived too)
    assert summary["completed"] <= arrived <= summary["completed"] + summary["errors"]["cancelled"]


def test_a_background_replay_with_workers_stops_as_one(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=100, span_s=1.0)
    with RecordingServer() as server:
        started = replay_traffic(
            capture=str(capture), target_url=server.url, loop=True, duration="10m", workers=2,
            wait=False, configuration=config,
        )  # fmt: skip
        out = Path(started["results"])
        pids = _sending_shard_pids(out, "shards/*/summary.json")
        live = replay_summary(configuration=config)
        assert live["state"] == "running" and live["workers"] == 2
        result = stop_traffic_replay(configuration=config)
        arrived = len(server.arrived)
    summary = result["summaries"][started["replay_id"]]
    assert summary["state"] == "stopped"
    assert not any(_alive(pid) for pid in [*pids, started["pid"]])
    assert summary["completed"] <= arrived <= summary["completed"] + summary["errors"]["cancelled"]


def test_a_capture_larger_than_the_memory_limit_replays_within_it(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    """160 MiB of requests replayed by a process whose cgroup may hold 128 MiB: the schedule is
    mapped, not loaded, so the kernel reclaims pages already sent instead of OOM-killing us."""
    count, body = 160, os.urandom(1024) * 1024
    capture = tmp_path / "big.gor"
    with capture.open("wb") as out:
        for i in range(count):
            head = b"POST /big/%d HTTP/1.1\r\nHost: prod\r\nContent-Length: %d\r\n\r\n" % (
                i,
                len(body),
            )
            write_gor_record(out, kind=1, at_ns=T0_NS + i * 1_000_000, payload=head + body)
    state = tmp_path / "state"
    limit = 128 * 1024 * 1024
    with RecordingServer(keep_bodies=False) as server:
        options = parse_options(capture=str(capture), target_url=server.url, rate=400, workers=1)
        compiled = compile_capture(options, cache=state / "cache" / "schedules")
        assert compiled.wire_path.stat().st_size > limit
        cgroup.set_memory_limit(limit)
        proc = cgroup.spawn(
            [sys.executable, "-m", "chaosmem.cli", "replay", str(capture), "--target", server.url,
             "--rate", "400", "--workers", "1", "--concurrency", "4", "--state-dir", str(state),
             "--json"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        arrived = len(server.arrived)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert cgroup.oom_kill_count() == 0
    summary = json.loads(out)
    assert summary["completed"] == count == arrived


def test_merging_refuses_what_a_shard_or_pod_log_should_not_say() -> None:
    from chaosmem.traffic.results import merge_seconds, merge_summaries

    hostile = {
        "state": "done", "sent": -5, "completed": "many", "status": {"200": 3, "x" * 99: 1,
        "503": -1}, "errors": {"timeout": 1.5}, "started_at": float("nan"),
        "duration_s": float("inf"), "cpu_s": -3, "passes": 2**70,
        "histograms": {"latency_us": {"buckets": {"99999999": 1}}},
    }  # fmt: skip
    fine = {"state": "done", "sent": 2, "completed": 2, "status": {"200": 2}, "duration_s": 1.0}
    merged = merge_summaries([hostile, fine], base={"replay_id": "r", "workers": 2})
    assert merged["sent"] == 2 and merged["completed"] == 2
    assert merged["status"] == {"200": 5}
    assert merged["duration_s"] == 1.0 and merged["cpu_s"] == 0.0
    assert merged["latency_ms"]["p99"] is None
    line = merge_seconds(
        [{"t": "soon", "sent": "x", "lag_p99_ms": float("inf"), "status": {"200": 1}},
         {"t": 5.0, "sent": 3, "lag_p99_ms": 2.0}]
    )  # fmt: skip
    assert line["t"] == 5.0 and line["sent"] == 3 and line["lag_p99_ms"] == 2.0


def test_a_worker_killed_mid_replay_fails_the_replay_and_says_which(tmp_path: Path) -> None:
    with RecordingServer() as server, _sharded_cli_replay(tmp_path, server.url) as (proc, state):
        victim = _sending_shard_pids(state, "replays/*/shards/*/summary.json")[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=HANG)
    summary = json.loads(out)
    assert proc.returncode != 0
    assert summary["state"] == "failed"
    assert "worker 0 exited with -9" in summary["error"]
    # what the killed worker reported before it died still counts
    assert summary["sent"] > 0


def test_a_worker_reads_back_exactly_the_options_it_was_given(tmp_path: Path) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=2, span_s=0.1)
    options = parse_options(
        capture=str(capture), target_url="http://127.0.0.1:9/p", rate="300/s", duration="2m",
        loop=True, concurrency=9, timeout="250ms", headers={"X-A": "1", "X-B": 2},
        remove_headers=["Cookie"], methods=["get", "POST"], path_pattern="^/o",
        session_key="cookie:sid", workers=3,
    )  # fmt: skip
    spec = json.loads(json.dumps(options.to_spec()))  # through spec.json
    assert ReplayOptions.from_spec(spec) == options
    assert ReplayOptions.from_spec(spec, workers=1).workers == 1
    assert parse_options(**spec) == options


def test_a_content_hash_is_remembered_only_for_a_settled_file(tmp_path: Path) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=20, span_s=0.5)
    cache = tmp_path / "cache"
    options = parse_options(capture=str(capture), target_url="http://127.0.0.1:9")
    first = compile_capture(options, cache=cache)
    assert not (cache / "hashes").exists() or not list((cache / "hashes").iterdir())  # racy
    settled = time.time() - 60
    os.utime(capture, (settled, settled))
    assert compile_capture(options, cache=cache).directory == first.directory
    assert len(list((cache / "hashes").iterdir())) == 1
    # another content is another identity (size, mtime): hashed again, compiled again
    write_timed_gor(capture, count=21, span_s=0.5)
    os.utime(capture, (settled, settled))
    again = compile_capture(options, cache=cache)
    assert again.directory != first.directory and again.requests == 21
