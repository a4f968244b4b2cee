"""A tiny HTTP service that allocates on request, to be squeezed by chaosmem experiments.

The server itself stays small; each ``POST /alloc?mib=N`` starts a worker process that touches
N MiB and holds it, the way a request handler that buffers a big payload would. When the kernel
OOM-kills the worker, the server keeps answering and reports the worker's fate on ``/status``.

    python3 demo/allocator.py --port 18931
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WORKER = "import sys, time; b = bytearray(int(sys.argv[1]) << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3600)"
workers: list[subprocess.Popen[bytes]] = []


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send(200, {"ok": True})
        elif path == "/status":
            self._send(200, {"workers": [{"pid": w.pid, "exit": w.poll()} for w in workers]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if parts.path != "/alloc":
            self._send(404, {"error": "not found"})
            return
        mib = int(parse_qs(parts.query).get("mib", ["64"])[0])
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(mib)])
        workers.append(worker)
        self._send(202, {"worker": worker.pid, "mib": mib})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
