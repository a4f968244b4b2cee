"""A real loopback HTTP/1.1 server for the traffic tests: records what arrives, answers by rule.

It is the standard library's threading server on purpose: an independent HTTP implementation
checks that what the replayer writes is what a server reads. Modes:

* ``ok``: answer each request with ``status_for(index)`` (default 200) and keep the connection;
* ``hang``: read the request and never answer (until the server stops);
* ``reset``: read the request and close the connection with a TCP RST.

Everything it starts ends in ``close()``; the tests use it as a context manager.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Arrived:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    at: float


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        srv = self.server
        with srv.lock:
            index = len(srv.arrived)
            srv.arrived.append(
                Arrived(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body if srv.keep_bodies else b"",
                    time.time(),
                )
            )
        if srv.mode == "hang":
            srv.stopping.wait(60)
            self.close_connection = True
            return
        if srv.mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if srv.delay:
            time.sleep(srv.delay)
        status = srv.status_for(index)
        payload = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, mode: str, status_for: Callable[[int], int], delay: float, keep_bodies: bool = True
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.keep_bodies = keep_bodies
        self.mode = mode
        self.status_for = status_for
        self.delay = delay
        self.arrived: list[Arrived] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()


class RecordingServer:
    def __init__(
        self,
        mode: str = "ok",
        status_for: Callable[[int], int] | None = None,
        delay: float = 0.0,
        *,
        keep_bodies: bool = True,
    ) -> None:
        self._server = _Server(mode, status_for or (lambda _i: 200), delay, keep_bodies)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def arrived(self) -> list[Arrived]:
        with self._server.lock:
            return list(self._server.arrived)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def refused_url() -> str:
    """A loopback URL where nothing listens: bind a port, then free it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
