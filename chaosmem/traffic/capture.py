"""Captured traffic, read as a stream of requests with the time each was recorded.

Three formats, detected by name (``.gor``, ``.har``, ``.jsonl``/``.ndjson``, each optionally
``.gz``) or, failing that, by their first bytes:

* **goreplay** files exactly as ``gor --output-file`` writes them: a header line
  ``TYPE ID TIMESTAMP_NS [LATENCY_NS]``, the raw HTTP message, and the separator
  ``"\\n🐵🙈🙉\\n"`` after every record. Type ``1`` is a request and is replayed; ``2`` (the
  original response) and ``3`` (a replayed response) are counted and skipped.
* **HAR 1.2**, streamed entry by entry with ``ijson`` so a browser export of any size is never
  loaded whole.
* **chaosmem JSON lines**: one object per line, ``{"time": 1700000000.25, "method": "POST",
  "path": "/orders?id=1", "headers": {"Content-Type": "application/json"}, "body": "{}"}``;
  ``url`` may replace ``path`` (only its path and query are used), ``headers`` may be a list of
  ``[name, value]`` pairs, ``body_base64`` may replace ``body``, ``time`` (seconds, any epoch)
  may be left out when the replay is driven by ``rate``.

Everything is a generator over a file read in chunks, so a capture of many gigabytes replays in
constant memory. A malformed record is counted in :class:`CaptureStats` with its position
(file, record number, byte offset or line) and skipped: one bad record must never stop a replay.
Several files (a glob) are merged in recorded-time order, as goreplay rotates its output files.
"""

from __future__ import annotations

import base64
import binascii
import glob
import gzip
import heapq
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httptools
import ijson

from chaosmem.errors import InvalidArgument

__all__ = [
    "FORMATS",
    "GOR_SEPARATOR",
    "CaptureStats",
    "CapturedRequest",
    "Malformed",
    "check_request",
    "detect_format",
    "expand_capture",
    "read_capture",
    "read_gor",
    "read_har",
    "read_jsonl",
    "write_gor_record",
]

GOR_SEPARATOR = "\n🐵🙈🙉\n".encode()
FORMATS = ("auto", "gor", "har", "jsonl")
CHUNK = 1 << 20
#: How many malformed records keep their position and reason; the rest are only counted.
MALFORMED_SAMPLES = 50
#: The largest record any reader holds (a goreplay record, a JSON line, a HAR entry's text):
#: a capture of any size replays in bounded memory, whatever one record claims.
MAX_RECORD = 16 << 20
#: How deep JSON may nest inside one record (a HAR entry is about 5 levels deep).
MAX_DEPTH = 32
#: Recorded times (seconds) beyond this are not times: about year 5138 of the unix epoch.
MAX_TIME_S = 1e11
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


def check_request(method: bytes, target: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
    """Raise ``ValueError`` unless the request can be sent as captured without changing its
    meaning: a token method, a target without spaces or control characters, token header names
    and values without CR, LF or NUL (a value ``"b\\r\\nInjected: yes"`` would add a header)."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"method {method[:40]!r} is not an HTTP method")
    if not target or _BAD_TARGET.search(target):
        raise ValueError(f"request target {target[:80]!r} holds spaces or control characters")
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name[:40]!r} is not an HTTP token")
        if _BAD_VALUE.search(value):
            raise ValueError(f"header {name[:40]!r} has a line break or NUL in its value")


@dataclass(frozen=True, slots=True)
class CapturedRequest:
    """One recorded request, as bytes, so that replaying it sends what was captured.

    ``target`` is the origin-form request target (path and query); a recorded absolute URL is
    reduced to it because the recorded host is never dialled. ``at_ns`` is the recorded time in
    nanoseconds on the capture's own clock; only differences between requests matter.
    """

    at_ns: int
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    position: str
    #: HAR's ``connection`` (the recorded client connection): keeps a session on one worker.
    connection: bytes = b""


@dataclass(frozen=True, slots=True)
class Malformed:
    position: str
    reason: str


@dataclass
class CaptureStats:
    """What reading the capture met: requests, skipped responses, malformed records."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    requests: int = 0
    skipped_responses: int = 0
    malformed: int = 0
    samples: list[Malformed] = field(default_factory=list)

    def bad(self, position: str, reason: str) -> None:
        self.malformed += 1
        if len(self.samples) < MALFORMED_SAMPLES:
            self.samples.append(Malformed(position, reason))

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "records": self.records,
            "requests": self.requests,
            "skipped_responses": self.skipped_responses,
            "malformed": self.malformed,
            "malformed_samples": [
                {"position": m.position, "reason": m.reason} for m in self.samples
            ],
        }


# -- raw HTTP requests -------------------------------------------------------------------------


class _RequestSink:
    """Callbacks for ``httptools.HttpRequestParser``: collects one request."""

    __slots__ = ("body", "complete", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def origin_form(url: bytes) -> bytes:
    """The path and query of a request target; ``http://host/a?b`` becomes ``/a?b``.

    Raises ``ValueError`` for a target that is neither.
    """
    if url.startswith(b"/") or url == b"*":
        return url
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserError:
        raise ValueError(f"request target {url[:80]!r} is neither a path nor a URL") from None
    path = parsed.path or b"/"
    return path + (b"?" + parsed.query if parsed.query else b"")


def parse_http_request(raw: bytes) -> tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...], bytes]:
    """Method, target, headers and (de-chunked) body of one raw HTTP/1.x request.

    Raises ``ValueError`` with a short reason for anything that is not one complete request:
    a replay of half a body would send the service something it never received.
    """
    # NB: hand-written captures often use bare "\n"; goreplay writes "\r\n". The parser is
    # lenient about line ends in headers but needs a real request line.
    sink = _RequestSink()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        raise ValueError("an upgrade (websocket/CONNECT) request cannot be replayed") from None
    except httptools.HttpParserError as exc:
        raise ValueError(f"not an HTTP request ({exc})") from None
    if not sink.complete:
        raise ValueError("incomplete HTTP request (headers or body cut short)")
    method = parser.get_method()
    return method, origin_form(sink.url), tuple(sink.headers), b"".join(sink.body)


# -- goreplay ----------------------------------------------------------------------------------


def _gor_records(
    stream: IO[bytes], max_record: int = MAX_RECORD
) -> Iterator[tuple[int, int, bytes | None]]:
    """(record number, byte offset, bytes) for each record between separators, streamed;
    bytes is None for a record longer than ``max_record`` (skipped to the next separator)."""
    buf = b""
    base = 0  # byte offset of buf[0] in the (decompressed) file
    number = 0
    skipping = False  # inside an oversized record: drop bytes until its separator
    # NB: read1 hands over what one decompression step gave, so the records of a truncated
    # .gz before the cut are still replayed; read(CHUNK) would raise before returning any.
    read = getattr(stream, "read1", stream.read)
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        buf += chunk
        start = 0
        while (end := buf.find(GOR_SEPARATOR, start)) >= 0:
            number += 1
            too_big = skipping or end - start > max_record
            yield number, base + start, None if too_big else buf[start:end]
            skipping = False
            start = end + len(GOR_SEPARATOR)
        base += start
        buf = buf[start:]
        if len(buf) > max_record + len(GOR_SEPARATOR):
            # keep only what could be the start of a separator
            keep = len(GOR_SEPARATOR) - 1
            base += len(buf) - keep
            buf = buf[-keep:]
            skipping = True
    if buf.strip() or skipping:
        number += 1
        yield number, base, None if skipping else buf


def read_gor(stream: IO[bytes], name: str, stats: CaptureStats) -> Iterator[CapturedRequest]:
    """Requests (type 1) of a goreplay file; responses are skipped, bad records counted."""
    for number, offset, record in _gor_records(stream):
        stats.records += 1
        position = f"{name}: record {number} at byte {offset}"
        if record is None:
            stats.bad(position, f"record longer than {MAX_RECORD} bytes")
            continue
        newline = record.find(b"\n")
        header = record[:newline] if newline >= 0 else record
        fields = header.split()
        if len(fields) not in (3, 4) or fields[0] not in (b"1", b"2", b"3"):
            stats.bad(position, "header line is not 'TYPE ID TIMESTAMP_NS [LATENCY_NS]'")
            continue
        if fields[0] != b"1":
            stats.skipped_responses += 1
            continue
        try:
            if len(fields[2]) > 20 or not fields[2].isdigit() or int(fields[2]) >= 1 << 63:
                raise ValueError(fields[2])
            at_ns = int(fields[2])
        except ValueError:
            stats.bad(position, f"timestamp {fields[2]!r} is not a whole number of nanoseconds")
            continue
        try:
            method, target, headers, body = parse_http_request(record[newline + 1 :])
            check_request(method, target, headers)
        except ValueError as exc:
            stats.bad(position, str(exc))
            continue
        stats.requests += 1
        yield CapturedRequest(at_ns, method, target, headers, body, position)


def write_gor_record(
    out: IO[bytes],
    *,
    kind: int,
    at_ns: int,
    payload: bytes,
    record_id: str = "",
    latency_ns: int = 0,
) -> None:
    """Append one record as goreplay writes it (used by tests, the bench and fixtures)."""
    rid = record_id or os.urandom(12).hex()
    out.write(f"{kind} {rid} {at_ns} {latency_ns}\n".encode() + payload + GOR_SEPARATOR)


# -- HAR ---------------------------------------------------------------------------------------


def _text(value: Any) -> bytes:
    return str(value).encode("utf-8")


def _har_time_ns(value: Any) -> int:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("startedDateTime is not an ISO 8601 time")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("startedDateTime has no time zone")
    return int(moment.timestamp() * 1_000_000_000)


def _har_request(entry: Any) -> tuple[int, bytes, bytes, tuple[tuple[bytes, bytes], ...], bytes]:
    request = entry["request"]
    method = _text(request["method"]).upper()
    target = origin_form(_text(request["url"]))
    headers = tuple(
        (_text(h["name"]), _text(h["value"]))
        for h in request.get("headers") or ()
        # HTTP/2 pseudo-headers (":authority", ":path") are not HTTP/1.1 headers.
        if not str(h["name"]).startswith(":")
    )
    body = b""
    post = request.get("postData")
    if post:
        text = post.get("text") or ""
        if post.get("encoding") == "base64":
            body = base64.b64decode(text, validate=True)
        else:
            body = _text(text)
    return _har_time_ns(entry["startedDateTime"]), method, target, headers, body


_OPEN = frozenset({"start_map", "start_array"})
_STEP = {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}
_CLOSE = frozenset({"end_map", "end_array"})


class _TooDeep(ValueError):
    pass


def _har_entries(stream: IO[bytes]) -> Iterator[tuple[Any, str | None]]:
    """Each element of ``log.entries``, built from ``ijson``'s basic events with bounds: an
    entry nested deeper than :data:`MAX_DEPTH` or larger than :data:`MAX_RECORD` comes out as
    ``(None, reason)`` and is never built.

    NB: not ``ijson.items()``: its prefix strings grow with depth, so 20,000 nested arrays
    (40 KB of HAR) cost a gigabyte before a single entry is returned. The entry is built here
    with a plain stack (no per-event method calls): this loop is the HAR reader's hot path.
    """
    frames: list[list[Any]] = []  # [kind, current key] of each container around the entries
    stack: list[Any] = []  # the containers of the entry being built, innermost last
    keys: list[Any] = []  # the current key of each of them (maps), or None (arrays)
    reason: str | None = None
    size = 0
    for event, value in ijson.basic_parse(stream, use_float=True):
        if stack:
            if reason is None:
                if event == "map_key":
                    keys[-1] = value
                    size += len(value) + 8
                    continue
                step = _STEP.get(event)
                if step is None:  # a scalar
                    size += len(value) + 8 if type(value) is str else 8
                    top = stack[-1]
                    if type(top) is dict:
                        top[keys[-1]] = value
                    else:
                        top.append(value)
                elif step > 0:
                    new: Any = {} if event == "start_map" else []
                    top = stack[-1]
                    if type(top) is dict:
                        top[keys[-1]] = new
                    else:
                        top.append(new)
                    stack.append(new)
                    keys.append(None)
                    if len(stack) > MAX_DEPTH:
                        reason = f"nested deeper than {MAX_DEPTH} levels"
                elif len(stack) == 1:
                    yield stack[0], None
                    stack.clear()
                    keys.clear()
                    size = 0
                    continue
                else:
                    stack.pop()
                    keys.pop()
                if size > MAX_RECORD:
                    reason = f"entry larger than {MAX_RECORD} bytes"
                if reason is not None:
                    # NB: drop what was built; from here only the depth is followed
                    depth = len(stack)
                    stack[1:] = []
                    stack[0] = depth
            else:
                step = _STEP.get(event)
                if step:
                    stack[0] += step
                    if stack[0] == 0:
                        yield None, reason
                        stack.clear()
                        keys.clear()
                        reason, size = None, 0
            continue
        if (
            len(frames) == 3
            and frames[0] == ["map", "log"]
            and frames[1] == ["map", "entries"]
            and frames[2][0] == "array"
            and event != "end_array"
        ):
            if event in _OPEN:
                stack.append({} if event == "start_map" else [])
                keys.append(None)
            else:
                yield value, None  # a scalar entry: refused as "not a HAR request entry"
            continue
        if event in _OPEN:
            frames.append(["map" if event == "start_map" else "array", None])
            if len(frames) > MAX_DEPTH:
                raise _TooDeep(f"nested deeper than {MAX_DEPTH} levels outside the entries")
        elif event in _CLOSE:
            frames.pop()
        elif event == "map_key":
            frames[-1][1] = value


def read_har(stream: IO[bytes], name: str, stats: CaptureStats) -> Iterator[CapturedRequest]:
    """Requests of a HAR 1.2 file, entry by entry (``log.entries``), in bounded memory."""
    number = 0
    try:
        for entry, reason in _har_entries(stream):
            number += 1
            stats.records += 1
            position = f"{name}: entry {number}"
            if reason is not None:
                stats.bad(position, reason)
                continue
            try:
                at_ns, method, target, headers, body = _har_request(entry)
                check_request(method, target, headers)
            except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
                stats.bad(position, f"not a HAR request entry ({type(exc).__name__}: {exc})")
                continue
            stats.requests += 1
            connection = entry.get("connection") if isinstance(entry, dict) else None
            link = _text(connection)[:256] if isinstance(connection, str | int) else b""
            yield CapturedRequest(at_ns, method, target, headers, body, position, link)
    except (ijson.JSONError, _TooDeep) as exc:
        # NB: a JSON syntax error leaves no way to find the next entry: the rest is lost, counted.
        stats.records += 1
        stats.bad(f"{name}: after entry {number}", f"invalid JSON, rest of file skipped ({exc})")


# -- chaosmem JSON lines -----------------------------------------------------------------------


def _jsonl_request(obj: Any, previous_ns: int) -> CapturedRequest:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    method = _text(obj.get("method", "GET")).upper()
    if "path" in obj:
        target = _text(obj["path"])
        if not target.startswith(b"/"):
            raise ValueError(f"path {obj['path']!r} does not start with '/'")
    elif "url" in obj:
        target = origin_form(_text(obj["url"]))
    else:
        raise ValueError("neither 'path' nor 'url'")
    raw_headers = obj.get("headers") or {}
    pairs: Iterable[Any] = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    headers = []
    for pair in pairs:
        name, value = pair
        headers.append((_text(name), _text(value)))
    if "body_base64" in obj:
        body = base64.b64decode(str(obj["body_base64"]), validate=True)
    else:
        body = _text(obj.get("body", "")) if obj.get("body") is not None else b""
    time = obj.get("time")
    if time is None:
        at_ns = previous_ns
    elif (
        isinstance(time, int | float)
        and not isinstance(time, bool)
        and -MAX_TIME_S <= time <= MAX_TIME_S  # NB: False for NaN too
    ):
        at_ns = int(time * 1_000_000_000)
    else:
        raise ValueError(f"time {str(time)[:40]} is not a number of seconds within ±1e11")
    check_request(method, target, tuple(headers))
    return CapturedRequest(at_ns, method, target, tuple(headers), body, "")


def _lines(stream: IO[bytes], max_record: int = MAX_RECORD) -> Iterator[bytes | None]:
    """The file's lines; None for one longer than ``max_record`` (read past, never held)."""
    while line := stream.readline(max_record + 1):
        if len(line) > max_record and not line.endswith(b"\n"):
            while (rest := stream.readline(CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def read_jsonl(stream: IO[bytes], name: str, stats: CaptureStats) -> Iterator[CapturedRequest]:
    """Requests of a chaosmem JSON-lines file, line by line."""
    previous_ns = 0
    for number, line in enumerate(_lines(stream), start=1):
        if line is not None and not line.strip():
            continue
        stats.records += 1
        position = f"{name}: line {number}"
        try:
            if line is None:
                raise ValueError(f"line longer than {MAX_RECORD} bytes")
            request = _jsonl_request(json.loads(line), previous_ns)
        except (ValueError, TypeError, binascii.Error, RecursionError, OverflowError) as exc:
            stats.bad(position, str(exc)[:200] or type(exc).__name__)
            continue
        previous_ns = request.at_ns
        stats.requests += 1
        yield CapturedRequest(
            request.at_ns, request.method, request.target, request.headers, request.body, position
        )


# -- files -------------------------------------------------------------------------------------

_READERS = {"gor": read_gor, "har": read_har, "jsonl": read_jsonl}


def _open(path: str) -> IO[bytes]:
    """The file's bytes, gunzipped when it is gzip; the caller closes what it gets."""
    raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
    try:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if not gzipped:
        return raw
    # NB: a GzipFile never closes a ``fileobj`` it was given; opened by name it owns the file.
    raw.close()
    return gzip.GzipFile(path, mode="rb")  # type: ignore[return-value]


def detect_format(path: str) -> str:
    """``gor``, ``har`` or ``jsonl``: by the file name, else by the first bytes."""
    name = path.lower().removesuffix(".gz")
    for suffix, fmt in (
        (".gor", "gor"),
        (".har", "har"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
    ):
        if name.endswith(suffix):
            return fmt
    with _open(path) as stream:
        head = stream.read(4096).lstrip()
    if head.startswith(b"{"):
        first_line = head.split(b"\n", 1)[0]
        try:
            first = json.loads(first_line)
        except ValueError:
            return "har"  # an object longer than a line: a (pretty-printed or long) document
        return "har" if isinstance(first, dict) and "log" in first else "jsonl"
    return "gor"


def expand_capture(capture: object, *, name: str = "capture") -> list[str]:
    """The files a capture argument names: a path, a glob, or a list of them; sorted, checked."""
    patterns: list[object] = list(capture) if isinstance(capture, list | tuple) else [capture]
    if not patterns:
        raise InvalidArgument(name, capture, "a capture file path or glob")
    files: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str | os.PathLike) or not str(pattern).strip():
            raise InvalidArgument(name, capture, "a capture file path or glob (or a list of them)")
        text = os.path.expanduser(str(pattern))
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise InvalidArgument(
                name,
                str(pattern),
                "a readable capture file (.gor, .har, .jsonl, optionally .gz) "
                "or a glob matching some",
            )
        for match in matches:
            if not os.access(match, os.R_OK):
                raise InvalidArgument(name, match, "a file this user can read")
        files.extend(matches)
    return files


def _read_file(path: str, fmt: str, stats: CaptureStats) -> Iterator[CapturedRequest]:
    name = os.path.basename(path)
    try:
        stream = _open(path)
    except OSError as exc:
        stats.records += 1
        stats.bad(name, f"cannot open ({exc.strerror})")
        return
    with stream:
        try:
            yield from _READERS[detect_format(path) if fmt == "auto" else fmt](stream, name, stats)
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
            # A truncated .gz (a capture copied while gor was still writing) ends that file only.
            stats.records += 1
            stats.bad(f"{name}: end of file", f"unreadable ({type(exc).__name__}: {exc})")


def read_capture(
    files: list[str], *, fmt: str = "auto", stats: CaptureStats
) -> Iterator[CapturedRequest]:
    """All requests of ``files``, merged by recorded time when there are several."""
    stats.files = list(files)
    streams = [_read_file(path, fmt, stats) for path in files]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda r: r.at_ns)


def gor_bytes(records: Iterable[tuple[int, int, bytes]]) -> bytes:
    """A whole goreplay file from ``(kind, at_ns, payload)`` triples (for tests and fixtures)."""
    out = io.BytesIO()
    for kind, at_ns, payload in records:
        write_gor_record(out, kind=kind, at_ns=at_ns, payload=payload)
    return out.getvalue()
