"""The Go demo service and a real Prometheus for tests: built, started and stopped by PID.

``make orders`` builds ``demo/bin/orders`` (cached; installs Go when missing); ``OrdersService``
runs it on a free loopback port and stops it with SIGTERM, then SIGKILL, by the PID it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.conftest import REPO, free_port

ORDERS_BIN = REPO / "demo" / "bin" / "orders"


def build_orders() -> Path:
    """``make orders``: a no-op when the binary is newer than the sources."""
    subprocess.run(["make", "--no-print-directory", "orders"], cwd=REPO, check=True)
    return ORDERS_BIN


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def get_json(url: str) -> Any:
    status, body = http("GET", url)
    assert status == 200, (url, status, body[:300])
    return json.loads(body)


class OrdersService:
    """One ``demo/bin/orders`` process on 127.0.0.1:<free port>."""

    def __init__(
        self,
        log: Path,
        env: Mapping[str, str] | None = None,
        args: list[str] | None = None,
        preexec: Any = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERS_", "GO"))}
        full_env.update(env or {})
        full_env["ORDERS_ADDR"] = f"127.0.0.1:{self.port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(ORDERS_BIN), *(args or [])],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=preexec,
            )
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"orders exited {self.proc.returncode}: {self.log.read_text()}")
            with contextlib.suppress(OSError):
                if http("GET", f"{self.url}/healthz", timeout=1)[0] == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"orders not ready: {self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return int(self.proc.returncode)

    def __enter__(self) -> OrdersService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def leak_until(
    url: str, fraction: float, size: str = "1Mi", configuration: Any = None
) -> dict[str, Any]:
    """A Chaos Toolkit action for the tests: leak-mode requests to the ``orders`` service until
    its cgroup's working set reaches ``fraction`` of its limit (at most 2000 requests)."""
    from chaosmem.targets import resolve_target
    from chaosmem.targets.workingset import memory_breakdown

    target = resolve_target({"type": "service", "name": "orders"}, configuration)
    limit = target.memory_limit()
    assert limit is not None
    http("POST", f"{url}/admin/leak?on=1&size={size}")
    sent = 0
    ratio = 0.0
    while sent < 2000:
        view = memory_breakdown(target)
        assert view is not None
        ratio = view["working_set"] / limit
        if ratio >= fraction:
            break
        http("GET", f"{url}/orders")
        sent += 1
    http("POST", f"{url}/admin/leak?on=0")
    return {"requests": sent, "working_set_ratio": ratio}
