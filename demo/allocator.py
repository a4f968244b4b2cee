"""A tiny HTTP service that allocates on request, to be squeezed by chaosmem experiments.

The server itself stays small; each ``POST /alloc?mib=N`` starts a worker process that touches
N MiB and holds it, the way a request handler that buffers a big payload would. When the kernel
OOM-kills the worker, the server keeps answering and reports the worker's fate on ``/status``:

    {"workers": [{"pid": 12, "mib": 200, "exit": -9, "fate": "oom-killed"}],
     "oom_kills": 1, "not_oom_killed": 0}

A worker's fate is ``oom-killed`` only when it died of SIGKILL *and* the kernel's OOM-kill counter
of the server's memory cgroup moved by at least as many kills since the server started (a
SIGKILL from anyone else is ``killed``); ``holding`` while it still holds its memory.
``not_oom_killed`` counts the workers whose fate is anything but ``oom-killed``: the number an
experiment checks to prove that every worker that outgrew the limit was OOM-killed (0 before
the method too, when there is no worker yet). ``/status?expect=oom-killed`` answers 409
instead of 200 while that number is not 0, so an experiment checks it with a plain status
tolerance.

    python3 demo/allocator.py --port 18931
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WORKER = "import sys, time; b = bytearray(int(sys.argv[1]) << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3600)"
workers: list[tuple[subprocess.Popen[bytes], int]] = []


def oom_kills() -> int | None:
    """The kernel's count of OOM kills in this process's memory cgroup (v1 or v2), if readable."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as lines:
            entries = [line.rstrip("\n").split(":", 2) for line in lines]
    except OSError:
        return None
    for hierarchy, controllers, path in entries:
        if "memory" in controllers.split(","):
            where = f"/sys/fs/cgroup/memory{path}/memory.oom_control"
        elif hierarchy == "0":
            where = f"/sys/fs/cgroup{path}/memory.events"
        else:
            continue
        try:
            with open(where, encoding="ascii") as stats:
                for line in stats:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


KILLS_AT_START = oom_kills()


def status() -> dict[str, object]:
    now = oom_kills()
    kills = None if now is None or KILLS_AT_START is None else now - KILLS_AT_START
    rows: list[dict[str, object]] = []
    sigkilled = 0
    for worker, mib in workers:
        code = worker.poll()
        if code is None:
            fate = "holding"
        elif code == -signal.SIGKILL:
            sigkilled += 1
            fate = "oom-killed" if kills is not None and sigkilled <= kills else "killed"
        else:
            fate = "exited"
        rows.append({"pid": worker.pid, "mib": mib, "exit": code, "fate": fate})
    return {
        "workers": rows,
        "oom_kills": kills,
        "not_oom_killed": sum(1 for row in rows if row["fate"] != "oom-killed"),
    }


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
            body = status()
            strict = parse_qs(urlsplit(self.path).query).get("expect") == ["oom-killed"]
            self._send(409 if strict and body["not_oom_killed"] else 200, body)
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        if parts.path != "/alloc":
            self._send(404, {"error": "not found"})
            return
        mib = int(parse_qs(parts.query).get("mib", ["64"])[0])
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(mib)])
        workers.append((worker, mib))
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
