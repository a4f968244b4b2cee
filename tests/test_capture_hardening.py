"""Captures can't exhaust memory or inject headers (issue 9.8).

Memory is checked on the real kernel: the reader runs in a child memory cgroup with a 200Mi
limit, and the cgroup's own OOM-kill counter and peak usage say what it cost.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.targets.cgroup import Cgroup
from chaosmem.traffic.actions import replay_traffic
from chaosmem.traffic.capture import (
    CaptureStats,
    _gor_records,
    read_gor,
    read_har,
    read_jsonl,
)
from tests.traffic_fixtures import raw_request, write_timed_gor
from tests.traffic_server import RecordingServer

NESTED = 20_000


def _nested_har(path: Path) -> Path:
    """40 KB of HAR: one good entry, then one whose request is 20,000 nested arrays."""
    good = {
        "startedDateTime": "2024-01-01T00:00:00+00:00",
        "request": {"method": "GET", "url": "http://x/ok", "headers": []},
    }
    text = (
        '{"log": {"version": "1.2", "entries": ['
        + json.dumps(good)
        + ', {"startedDateTime": "2024-01-01T00:00:01+00:00", "request": '
        + "[" * NESTED
        + "]" * NESTED
        + "}, "
        + json.dumps(good)
        + "]}}"
    )
    path.write_text(text)
    return path


READER = """
import sys
from chaosmem.traffic.capture import CaptureStats, read_capture
stats = CaptureStats()
requests = list(read_capture([sys.argv[1]], stats=stats))
print(len(requests), stats.malformed, stats.samples[0].reason if stats.samples else "")
"""


def test_deeply_nested_har_is_read_within_200mi(cgroup: Cgroup, tmp_path: Path) -> None:
    """Before: ijson's prefixes grew with depth; this 40 KB file took about 1 GB and the reader
    was OOM-killed inside a 512Mi cgroup."""
    capture = _nested_har(tmp_path / "deep.har")
    assert capture.stat().st_size < 48_000
    cgroup.set_memory_limit(200 << 20)
    process = cgroup.spawn([sys.executable, "-c", READER, str(capture)], stdout=subprocess.PIPE)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert cgroup.oom_kill_count() == 0
    requests, malformed, reason = out.decode().split(" ", 2)
    assert (requests, malformed) == ("2", "1")
    assert "nested deeper than 32" in reason
    peak = int((cgroup.path / "memory.max_usage_in_bytes").read_text())
    assert peak < 200 << 20


def test_nesting_outside_the_entries_ends_the_file_clearly() -> None:
    text = '{"log": {"pages": ' + "[" * NESTED + "]" * NESTED + "}}"
    stats = CaptureStats()
    assert list(read_har(io.BytesIO(text.encode()), "x.har", stats)) == []
    assert stats.malformed == 1 and "nested deeper" in stats.samples[0].reason


@pytest.mark.parametrize(
    "time_value", ["1e308", "-1e308", "Infinity", "-Infinity", "NaN", "1e400", "99999999999999"]
)
def test_a_bad_time_is_one_malformed_record_not_the_end_of_the_replay(time_value: str) -> None:
    """Before: int(1e308 * 1e9) raised OverflowError and aborted the whole JSON-lines replay."""
    lines = [
        '{"time": 1.0, "path": "/a"}',
        '{"time": ' + time_value + ', "path": "/bad"}',
        '{"time": 2.0, "path": "/b"}',
    ]
    stats = CaptureStats()
    got = [r.target for r in read_jsonl(io.BytesIO("\n".join(lines).encode()), "t.jsonl", stats)]
    assert got == [b"/a", b"/b"]
    assert stats.malformed == 1 and "line 2" in stats.samples[0].position


INJECTIONS = [
    {"path": "/x", "headers": {"X-A": "b\r\nInjected: yes"}},
    {"path": "/x", "headers": {"X-A": "b\nInjected: yes"}},
    {"path": "/x", "headers": [["Bad Name", "v"]]},
    {"path": "/x", "headers": [["X-A:", "v"]]},
    {"path": "/x", "method": "GE T"},
    {"path": "/x", "method": "GET\r\nX: y"},
    {"path": "/x y HTTP/1.1\r\nInjected: yes\r\n\r\nGET /"},
    {"path": "/x\x00"},
]


@pytest.mark.parametrize("record", INJECTIONS)
def test_jsonl_requests_that_would_change_on_the_wire_are_malformed(record: dict[str, Any]) -> None:
    stats = CaptureStats()
    assert list(read_jsonl(io.BytesIO(json.dumps(record).encode()), "i.jsonl", stats)) == []
    assert stats.malformed == 1


@pytest.mark.parametrize("record", INJECTIONS)
def test_har_requests_that_would_change_on_the_wire_are_malformed(record: dict[str, Any]) -> None:
    headers = record.get("headers", {})
    pairs = headers.items() if isinstance(headers, dict) else headers
    entry = {
        "startedDateTime": "2024-01-01T00:00:00+00:00",
        "request": {
            "method": record.get("method", "GET"),
            "url": "http://h" + record["path"],
            "headers": [{"name": n, "value": v} for n, v in pairs],
        },
    }
    doc = {"log": {"entries": [entry]}}
    stats = CaptureStats()
    assert list(read_har(io.BytesIO(json.dumps(doc).encode()), "i.har", stats)) == []
    assert stats.malformed == 1


def test_injected_header_never_reaches_the_target(tmp_path: Path, state: dict[str, Any]) -> None:
    capture = tmp_path / "inject.jsonl"
    capture.write_text(
        "\n".join(json.dumps(r) for r in [{"path": "/ok"}, *INJECTIONS, {"path": "/ok2"}])
    )
    with RecordingServer() as server:
        summary = replay_traffic(
            capture=str(capture), target_url=server.url, rate=200, configuration=state
        )
        arrived = server.arrived
    assert [a.target for a in arrived] == ["/ok", "/ok2"]
    assert all("injected" not in a.headers for a in arrived)
    assert summary["capture"]["malformed"] == len(INJECTIONS)


def test_an_oversized_gor_record_is_skipped_in_bounded_memory() -> None:
    ok = raw_request("GET", "/small", {"Host": "x"}, b"")
    big = raw_request("POST", "/big", {"Host": "x"}, b"z" * 5000)
    data = b"".join(
        b"1 id %d 0\n" % i + payload + "\n🐵🙈🙉\n".encode()
        for i, payload in enumerate([ok, big, ok])
    )
    records = list(_gor_records(io.BytesIO(data), max_record=1024))
    assert [r is None for _, _, r in records] == [False, True, False]


@pytest.mark.parametrize("stamp", [b"1" * 40, b"99999999999999999999", b"-5", b"1e9"])
def test_gor_timestamps_out_of_range_are_malformed(stamp: bytes) -> None:
    data = (
        b"1 id "
        + stamp
        + b" 0\n"
        + raw_request("GET", "/", {"Host": "x"}, b"")
        + "\n🐵🙈🙉\n".encode()
    )
    stats = CaptureStats()
    assert list(read_gor(io.BytesIO(data), "t.gor", stats)) == []
    assert stats.malformed == 1


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
_RECORD = st.fixed_dictionaries(
    {},
    optional={
        "time": _VALUES,
        "method": st.sampled_from(["GET", "POST", "GE T", "G\r\nET", ""]) | _VALUES,
        "path": st.sampled_from(["/", "/a?b=1", "/a b", "x"]) | _VALUES,
        "headers": st.dictionaries(
            st.sampled_from(["X-A", "Bad Name", "X:B", ""]) | st.text(max_size=6),
            st.sampled_from(["v", "a\r\nb: c", "a\nb"]) | st.text(max_size=6),
            max_size=3,
        )
        | _VALUES,
        "body_base64": _VALUES,
    },
)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, allow_nan=True)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        _RECORD.map(_line)
        | st.integers(1, 50_000).map(lambda n: "[" * n + "]" * n)
        | st.integers(1, 50_000).map(lambda n: '{"path": "/", "x": ' + "[" * n)
        | st.text(max_size=30),
        max_size=6,
    )
)
def test_jsonl_fuzz_sends_only_sound_requests(lines: list[str]) -> None:
    stats = CaptureStats()
    data = "\n".join(lines).encode("utf-8", errors="replace")
    for request in read_jsonl(io.BytesIO(data), "f.jsonl", stats):
        assert b"\r" not in request.method and b" " not in request.method
        assert request.target.startswith(b"/") and b" " not in request.target
        for name, value in request.headers:
            assert b":" not in name and b" " not in name
            assert b"\r" not in value and b"\n" not in value
        assert abs(request.at_ns) <= 1e20
    assert stats.requests + stats.malformed == stats.records


@settings(max_examples=100, deadline=None)
@given(st.lists(_RECORD, max_size=4), st.integers(0, 200))
def test_har_fuzz_never_raises(records: list[dict[str, Any]], depth: int) -> None:
    entries = [
        {"startedDateTime": "2024-01-01T00:00:00+00:00", "request": {**r, "url": r.get("path")}}
        for r in records
    ]
    text = json.dumps({"log": {"entries": entries}}, allow_nan=True)
    text = (
        text.replace('"entries": [', '"entries": [' + "[" * depth + "]" * depth + ", ", 1)
        if depth
        else text
    )
    stats = CaptureStats()
    list(read_har(io.BytesIO(text.encode()), "f.har", stats))
    assert stats.requests + stats.malformed == stats.records


def test_requests_due_but_never_sent_are_counted(tmp_path: Path, state: dict[str, Any]) -> None:
    """Against a target that never answers, one connection is held and the schedule falls
    behind: what was due before `duration` ended and never went out has its own count."""
    capture = write_timed_gor(tmp_path / "t.gor", count=400, span_s=0.2)
    with RecordingServer(mode="hang") as server:
        summary = replay_traffic(
            capture=str(capture),
            target_url=server.url,
            concurrency=1,
            timeout="5s",
            duration="1s",
            configuration=state,
        )
    assert summary["sent"] >= 1
    assert summary["unsent_due"] == 400 - summary["sent"]


_NUMBERS = (
    st.integers(min_value=-(10**500), max_value=10**500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(0, 10**4).map(lambda n: "9" * n)
    | st.sampled_from(["1e400", "1e400/s", "inf", "nan", "-0", "1e9999999x", "2000/s"])
)


@settings(max_examples=200, deadline=None)
@given(speed=_NUMBERS, rate=_NUMBERS, concurrency=_NUMBERS, duration=_NUMBERS)
def test_replay_options_refuse_huge_and_non_finite_numbers(
    tmp_path_factory: pytest.TempPathFactory,
    speed: object,
    rate: object,
    concurrency: object,
    duration: object,
) -> None:
    """Issue 9.2 for replay options: 10**400 raised OverflowError from float(), a string of
    10,000 digits ValueError from int(); now each is a refusal naming its argument."""
    from chaosmem.errors import InvalidArgument
    from chaosmem.traffic.options import parse_options

    capture = tmp_path_factory.getbasetemp() / "opts.jsonl"
    capture.write_text('{"path": "/"}\n')
    for name, value in (
        ("speed", speed),
        ("rate", rate),
        ("concurrency", concurrency),
        ("duration", duration),
    ):
        try:
            options = parse_options(
                capture=str(capture), target_url="http://127.0.0.1:1/", **{name: value}
            )
        except InvalidArgument as exc:
            assert exc.name == name
        else:
            assert options is not None
