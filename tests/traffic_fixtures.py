"""Capture files for the traffic tests: one set of requests written as .gor, .gor.gz, HAR, JSONL."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

from chaosmem.traffic.capture import gor_bytes

T0_NS = 1_700_000_000_000_000_000

#: (method, target, headers, body): what a replay must deliver intact.
REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/orders?id=1&sort=desc", {"Accept": "application/json"}, b""),
    ("POST", "/orders", {"Content-Type": "application/json"}, b'{"item": "socks", "qty": 2}'),
    ("PUT", "/orders/7?force=true", {"Content-Type": "text/plain"}, b"replace me"),
    ("DELETE", "/orders/7", {}, b""),
    ("GET", "/search?q=caf%C3%A9&page=2", {"X-Trace": "abc"}, b""),
    ("PATCH", "/orders/8", {"Content-Type": "application/octet-stream"}, bytes(range(256))),
]


def raw_request(method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: prod.example.com:8443", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in {"POST", "PUT", "PATCH"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def gor_records(gap_ns: int = 100_000_000) -> list[tuple[int, int, bytes]]:
    """Each request (type 1) followed by its original (2) and replayed (3) response."""
    records = []
    for i, (method, target, headers, body) in enumerate(REQUESTS):
        at = T0_NS + i * gap_ns
        records.append((1, at, raw_request(method, target, headers, body)))
        records.append((2, at + 1000, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        records.append((3, at + 2000, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"))
    return records


def write_gor(path: Path, gap_ns: int = 100_000_000) -> Path:
    data = gor_bytes(gor_records(gap_ns))
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_har(path: Path, gap_ns: int = 100_000_000) -> Path:
    entries = []
    for i, (method, target, headers, body) in enumerate(REQUESTS):
        at = datetime.fromtimestamp((T0_NS + i * gap_ns) / 1e9, tz=UTC)
        request: dict[str, object] = {
            "method": method,
            "url": "https://prod.example.com:8443" + target,
            "httpVersion": "HTTP/2",
            "headers": [{"name": ":authority", "value": "prod.example.com"}]
            + [{"name": k, "value": v} for k, v in headers.items()],
            "queryString": [],
            "cookies": [],
            "headersSize": -1,
            "bodySize": len(body),
        }
        if body:
            request["postData"] = {
                "mimeType": headers.get("Content-Type", ""),
                "text": base64.b64encode(body).decode(),
                "encoding": "base64",
            }
        entries.append(
            {"startedDateTime": at.isoformat(), "time": 1.0, "request": request, "response": {}}
        )
    path.write_text(
        json.dumps({"log": {"version": "1.2", "creator": {"name": "t"}, "entries": entries}})
    )
    return path


def write_jsonl(path: Path, gap_ns: int = 100_000_000) -> Path:
    with path.open("w") as out:
        for i, (method, target, headers, body) in enumerate(REQUESTS):
            line = {
                "time": (T0_NS + i * gap_ns) / 1e9,
                "method": method,
                "path": target,
                "headers": headers,
            }
            line["body_base64"] = base64.b64encode(body).decode()
            out.write(json.dumps(line) + "\n")
    return path


def write_timed_gor(path: Path, *, count: int, span_s: float, raw: bytes | None = None) -> Path:
    """``count`` GET requests spread evenly over ``span_s`` seconds of recorded time."""
    step = int(span_s * 1e9 / max(count - 1, 1))
    records = [
        (1, T0_NS + i * step, raw or b"GET /t?i=%d HTTP/1.1\r\nHost: prod\r\n\r\n" % i)
        for i in range(count)
    ]
    path.write_bytes(gor_bytes(records))
    return path
