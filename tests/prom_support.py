"""Exporters for the Prometheus tests: real HTTP endpoints a real Prometheus scrapes.

``MixExporter`` serves ``http_requests_total`` counters growing at fixed per-second rates (so the
status mix Prometheus computes is known in advance); ``FileExporter`` serves a recorded
exposition file, switchable to another one mid-test (kube-state-metrics before/after an OOM kill).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from demo.prometheus import PrometheusHandle, start

DATA = Path(__file__).resolve().parent / "data"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    body: Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.body().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(body: Any) -> Iterator[str]:
    """Serve ``body()`` (called per scrape) on 127.0.0.1:<free port>; yields ``host:port``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.body = body
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class MixExporter:
    """``http_requests_total{code,handler}`` = rate × seconds since start, per series."""

    def __init__(self, rates: Mapping[tuple[str, str], float]) -> None:
        self.rates = dict(rates)
        self.t0 = time.time()

    def body(self) -> str:
        elapsed = time.time() - self.t0
        lines = ["# TYPE http_requests_total counter"]
        for (code, handler), rate in sorted(self.rates.items()):
            lines.append(
                f'http_requests_total{{code="{code}",handler="{handler}"}} {rate * elapsed:.3f}'
            )
        return "\n".join(lines) + "\n"


class FileExporter:
    def __init__(self, path: Path) -> None:
        self.path = path

    def body(self) -> str:
        return self.path.read_text()


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def prometheus(
    jobs: Mapping[str, list[str]], workdir: Path, **kw: Any
) -> Iterator[PrometheusHandle]:
    handle = start(jobs, workdir, **kw)
    try:
        yield handle
    finally:
        handle.stop()
