"""Capture readers: goreplay as goreplay writes it, HAR 1.2, JSON lines; malformed never fatal."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosmem.traffic.capture import (
    GOR_SEPARATOR,
    CaptureStats,
    detect_format,
    gor_bytes,
    read_capture,
    read_gor,
    read_har,
    read_jsonl,
)
from tests.traffic_fixtures import REQUESTS, T0_NS, write_gor, write_har, write_jsonl


def _read(path: Path) -> tuple[list[tuple[bytes, bytes, bytes]], CaptureStats]:
    stats = CaptureStats()
    got = [(r.method, r.target, r.body) for r in read_capture([str(path)], stats=stats)]
    return got, stats


EXPECTED = [(m.encode(), t.encode(), b) for m, t, _h, b in REQUESTS]


def test_gor_keeps_requests_and_skips_responses(tmp_path: Path) -> None:
    got, stats = _read(write_gor(tmp_path / "a.gor"))
    assert got == EXPECTED
    assert stats.requests == len(REQUESTS)
    assert stats.skipped_responses == 2 * len(REQUESTS)
    assert stats.malformed == 0


def test_gzip_har_and_jsonl_give_the_same_requests(tmp_path: Path) -> None:
    for path in (
        write_gor(tmp_path / "a.gor.gz"),
        write_har(tmp_path / "a.har"),
        write_jsonl(tmp_path / "a.jsonl"),
    ):
        got, stats = _read(path)
        assert got == EXPECTED, path.name
        assert stats.malformed == 0


def test_format_is_sniffed_without_a_telling_name(tmp_path: Path) -> None:
    gor = tmp_path / "capture.bin"
    gor.write_bytes(gzip.compress(gor_bytes([(1, 1, b"GET / HTTP/1.1\r\n\r\n")])))
    har = write_har(tmp_path / "h.json")
    jsonl = tmp_path / "j.txt"
    jsonl.write_text('{"path": "/"}\n')
    assert [detect_format(str(p)) for p in (gor, har, jsonl)] == ["gor", "har", "jsonl"]


def test_header_timestamps_and_latency_field_are_optional(tmp_path: Path) -> None:
    data = b"1 abc 1000\nGET /three-fields HTTP/1.1\r\n\r\n" + GOR_SEPARATOR
    data += b"1 abd 2000 55\nGET /four-fields HTTP/1.1\r\n\r\n" + GOR_SEPARATOR
    requests = list(read_gor(io.BytesIO(data), "x.gor", CaptureStats()))
    assert [(r.at_ns, r.target) for r in requests] == [
        (1000, b"/three-fields"),
        (2000, b"/four-fields"),
    ]


def test_malformed_records_are_counted_with_their_position_and_skipped() -> None:
    good = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
    data = gor_bytes([(1, 1, good)])
    data += b"this is not a header\nGET / HTTP/1.1\r\n\r\n" + GOR_SEPARATOR
    data += b"1 id notanumber\nGET / HTTP/1.1\r\n\r\n" + GOR_SEPARATOR
    data += b"1 id 5\nnot http at all\r\n\r\n" + GOR_SEPARATOR
    data += b"1 id 6\nPOST /cut HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort" + GOR_SEPARATOR
    data += gor_bytes([(1, 7, good)])
    stats = CaptureStats()
    requests = list(read_gor(io.BytesIO(data), "cap.gor", stats))
    assert [r.target for r in requests] == [b"/ok", b"/ok"]
    assert stats.malformed == 4
    positions = [m.position for m in stats.samples]
    assert positions[0].startswith("cap.gor: record 2 at byte ")
    assert [p.split(" at ")[0] for p in positions] == [f"cap.gor: record {n}" for n in (2, 3, 4, 5)]
    assert "incomplete" in stats.samples[3].reason
    # the byte offset points at the record's header line
    offset = int(positions[1].rsplit(" ", 1)[1])
    assert data[offset:].startswith(b"1 id notanumber")


def test_chunked_bodies_are_dechunked_and_absolute_targets_reduced() -> None:
    raw = (
        b"POST http://prod.example.com/upload?x=1 HTTP/1.1\r\nHost: prod.example.com\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    [request] = read_gor(io.BytesIO(gor_bytes([(1, 1, raw)])), "c.gor", CaptureStats())
    assert request.target == b"/upload?x=1"
    assert request.body == b"hello world"


def test_several_files_merge_in_recorded_time_order(tmp_path: Path) -> None:
    a = tmp_path / "part-0.gor"
    b = tmp_path / "part-1.gor.gz"
    a.write_bytes(gor_bytes([(1, t, b"GET /a%d HTTP/1.1\r\n\r\n" % t) for t in (1, 4, 5)]))
    b.write_bytes(
        gzip.compress(gor_bytes([(1, t, b"GET /b%d HTTP/1.1\r\n\r\n" % t) for t in (2, 3, 6)]))
    )
    stats = CaptureStats()
    from chaosmem.traffic.capture import expand_capture

    files = expand_capture(str(tmp_path / "part-*"))
    got = [r.target for r in read_capture(files, stats=stats)]
    assert got == [b"/a1", b"/b2", b"/b3", b"/a4", b"/a5", b"/b6"]


def test_truncated_gzip_ends_that_file_only_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.gor.gz"
    whole = gzip.compress(gor_bytes([(1, i, b"GET /%d HTTP/1.1\r\n\r\n" % i) for i in range(2000)]))
    path.write_bytes(whole[: len(whole) // 2])
    got, stats = _read(path)
    assert 0 < len(got) < 2000
    assert stats.malformed >= 1


def test_har_entries_that_are_not_requests_are_counted() -> None:
    doc = {
        "log": {
            "entries": [
                {
                    "startedDateTime": "2024-01-01T00:00:00.000Z",
                    "request": {"method": "GET", "url": "http://h/a"},
                },
                {"startedDateTime": "2024-01-01T00:00:01.000Z"},
                {
                    "startedDateTime": "not a date",
                    "request": {"method": "GET", "url": "http://h/b"},
                },
                {
                    "startedDateTime": "2024-01-01T00:00:02.000Z",
                    "request": {"method": "GET", "url": "/c"},
                },
            ]
        }
    }
    stats = CaptureStats()
    got = [r.target for r in read_har(io.BytesIO(json.dumps(doc).encode()), "x.har", stats)]
    assert got == [b"/a", b"/c"]
    assert [m.position for m in stats.samples] == ["x.har: entry 2", "x.har: entry 3"]


def test_har_syntax_error_keeps_what_came_before() -> None:
    text = (
        b'{"log": {"entries": [{"startedDateTime": "2024-01-01T00:00:00Z", '
        b'"request": {"method": "GET", "url": "/a"}}, {"sta'
    )
    stats = CaptureStats()
    got = [r.target for r in read_har(io.BytesIO(text), "x.har", stats)]
    assert got == [b"/a"]
    assert stats.malformed == 1


def test_jsonl_lines_report_their_line_number() -> None:
    text = (
        b'{"time": 1, "path": "/a"}\nnot json\n\n'
        b'{"time": 2, "url": "http://x/b?c=1", "method": "post"}\n[1]\n'
    )
    stats = CaptureStats()
    got = [(r.method, r.target, r.at_ns) for r in read_jsonl(io.BytesIO(text), "x.jsonl", stats)]
    assert got == [(b"GET", b"/a", 1_000_000_000), (b"POST", b"/b?c=1", 2_000_000_000)]
    assert [m.position for m in stats.samples] == ["x.jsonl: line 2", "x.jsonl: line 5"]


# -- property-based ----------------------------------------------------------------------------

_token = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PURGE"])
_path = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~/%", max_size=30).map(
    lambda s: "/" + s
)
_query = st.one_of(
    st.just(""), st.text(alphabet="abcxyz0123=&%+", min_size=1, max_size=20).map(lambda s: "?" + s)
)
_header_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda s: s[0] != "-" and s.lower() not in {"content-length", "transfer-encoding", "host"}
)
_header_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
_request = st.tuples(
    _token,
    _path,
    _query,
    st.lists(st.tuples(_header_name, _header_value), max_size=5),
    st.binary(max_size=200),
    st.integers(min_value=0, max_value=2**62),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(_request, st.sampled_from([1, 1, 2, 3])), max_size=12))
def test_gor_round_trip(
    items: list[tuple[tuple[str, str, str, list[tuple[str, str]], bytes, int], int]],
) -> None:
    records = []
    expected = []
    for (method, path, query, headers, body, at), kind in items:
        lines = [f"{method} {path}{query} HTTP/1.1", "Host: h"] + [f"{k}: {v}" for k, v in headers]
        lines.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        records.append((kind, at, payload))
        if kind == 1:
            expected.append(
                (
                    at,
                    method.encode(),
                    (path + query).encode(),
                    [(k.encode(), v.encode()) for k, v in headers],
                    body,
                )
            )
    stats = CaptureStats()
    got = [
        (
            r.at_ns,
            r.method,
            r.target,
            [h for h in r.headers if h[0].lower() not in {b"host", b"content-length"}],
            r.body,
        )
        for r in read_gor(io.BytesIO(gor_bytes(records)), "p.gor", stats)
    ]
    assert got == expected
    assert stats.malformed == 0
    assert stats.skipped_responses == sum(1 for _r, k in items if k != 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(["gor", "har", "jsonl"]))
def test_garbage_never_raises(data: bytes, fmt: str) -> None:
    reader = {"gor": read_gor, "har": read_har, "jsonl": read_jsonl}[fmt]
    stats = CaptureStats()
    for request in reader(io.BytesIO(data), "g", stats):
        assert request.target.startswith(b"/") or request.target == b"*"
    assert stats.requests + stats.malformed + stats.skipped_responses <= max(stats.records, 1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=80), st.just(b"1 x 12\n"), st.just(b"GET / HTTP/1.1\r\n\r\n")),
        max_size=8,
    )
)
def test_garbage_between_separators_never_raises(parts: list[bytes]) -> None:
    stats = CaptureStats()
    list(read_gor(io.BytesIO(GOR_SEPARATOR.join(parts)), "g", stats))
    assert stats.records <= len(parts)


def test_time_origin_constant_is_nanoseconds() -> None:
    assert T0_NS > 10**18
