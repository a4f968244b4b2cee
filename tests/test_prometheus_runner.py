"""demo/prometheus.py: a real Prometheus on 127.0.0.1, started and stopped by PID; and the
probes against it scraping the real Go demo service under known traffic."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.prometheus.probes import query_value, status_ratio
from chaosmem.traffic.actions import replay_traffic
from demo.prometheus import PrometheusError, start, stop_workdir
from tests.conftest import REPO
from tests.orders_support import OrdersService, build_orders, http
from tests.prom_support import wait_for


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cli_start_and_stop(tmp_path: Path) -> None:
    run = [sys.executable, str(REPO / "demo" / "prometheus.py")]
    out = subprocess.run(
        [*run, "start", "--workdir", str(tmp_path), "--target", "127.0.0.1:9"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    url = out.stdout.strip()
    pid = int((tmp_path / "prometheus.pid").read_text())
    try:
        assert url.startswith("http://127.0.0.1:") and _alive(pid)
        assert query_value("vector(1)", configuration={"prometheus_base_url": url}) == 1
        again = subprocess.run(
            [*run, "start", "--workdir", str(tmp_path), "--target", "127.0.0.1:9"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert again.returncode == 1 and "already runs there" in again.stderr
    finally:
        stopped = subprocess.run(
            [*run, "stop", "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=60
        )
    assert stopped.stdout.strip() == "stopped"
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert (tmp_path / "data").is_dir()  # its TSDB lived in the workdir
    second = subprocess.run(
        [*run, "stop", "--workdir", str(tmp_path)], capture_output=True, text=True
    )
    assert second.stdout.strip() == "not running"


def test_stop_never_signals_a_pid_that_is_not_its_server(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "prometheus.pid").write_text(f"{sleeper.pid}\n")
        assert stop_workdir(tmp_path) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    "targets",
    [
        ["10.0.0.1:9100"],
        ["example.com:80"],
        ["127.0.0.1"],
        "127.0.0.1:80",
        {"bad job!": ["127.0.0.1:1"]},
    ],
)
def test_refuses_targets_off_loopback_or_malformed(tmp_path: Path, targets: object) -> None:
    with pytest.raises(PrometheusError):
        start(targets, tmp_path)  # type: ignore[arg-type]
    assert not (tmp_path / "prometheus.pid").exists()


def test_refuses_a_bad_interval(tmp_path: Path) -> None:
    with pytest.raises(PrometheusError, match="interval"):
        start(["127.0.0.1:1"], tmp_path, interval="1s; rm -rf /")


def test_status_ratio_of_the_demo_service_under_known_traffic(tmp_path: Path) -> None:
    build_orders()
    with (
        OrdersService(tmp_path / "orders.log") as svc,
        start({"orders": [f"127.0.0.1:{svc.port}"]}, tmp_path / "prom") as prom,
    ):
        config = {"prometheus_base_url": prom.url}
        sel = f'job="orders",instance="127.0.0.1:{svc.port}",path="/orders"'
        wait_for(
            lambda: query_value('count_over_time(up{job="orders"}[1m])', configuration=config) >= 2,
            what="two scrapes",
        )
        # NB: rate() cannot see a counter's first value (it does not know it began at 0), so
        # each series gets one request that is scraped before the measured traffic starts.
        assert http("POST", f"{svc.url}/orders", b"{}")[0] == 422
        assert http("GET", f"{svc.url}/orders")[0] == 200
        total = f"sum(http_requests_total{{{sel}}})"
        wait_for(lambda: query_value(total, configuration=config) == 2, what="the first requests")
        for i in range(60):
            if i % 4 == 0:
                assert http("POST", f"{svc.url}/orders", b"{}")[0] == 422
            else:
                assert http("GET", f"{svc.url}/orders")[0] == 200
        wait_for(lambda: query_value(total, configuration=config) == 62, what="the 60 requests")
        # a window that holds every request: 15 of 60 were 422
        ratio = status_ratio("4xx", selector=sel, window="1m", configuration=config)
        assert ratio == pytest.approx(0.25, abs=0.03)
        assert status_ratio("503", selector=sel, window="1m", configuration=config) == 0.0
        heap = query_value(
            f'go_memstats_heap_inuse_bytes{{instance="127.0.0.1:{svc.port}"}}', configuration=config
        )
        assert heap > 0
    assert not _alive(prom.pid)
    assert os.path.isdir(tmp_path / "prom" / "data")


def test_server_side_503_ratio_agrees_with_the_replay(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    """Replayed traffic sheds with 503 at the demo's in-flight limit: the ratio Prometheus
    computes from the service's counters and the ratio the replayer saw are the same requests."""
    build_orders()
    capture = tmp_path / "orders.jsonl"
    capture.write_text('{"method": "GET", "path": "/orders?limit=5"}\n')
    env = {"ORDERS_MAX_INFLIGHT": "3", "ORDERS_LATENCY": "100ms"}
    with (
        OrdersService(tmp_path / "orders.log", env=env) as svc,
        start({"orders": [f"127.0.0.1:{svc.port}"]}, tmp_path / "prom") as prom,
    ):
        config = {"prometheus_base_url": prom.url, **state}
        sel = 'job="orders",path="/orders"'
        total = f"sum(http_requests_total{{{sel}}})"
        # both series exist and are scraped before the measured traffic (rate() cannot see a
        # counter's first value): a burst of 8 slow requests against 3 slots
        threads = [
            threading.Thread(target=http, args=("GET", f"{svc.url}/orders")) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(
            lambda: (
                query_value(f"count(http_requests_total{{{sel}}})", configuration=config) == 2
                and query_value(total, configuration=config) == 8
            ),
            what="both series scraped",
        )
        summary = replay_traffic(
            capture=str(capture), target_url=svc.url, rate=60, loop=True, duration="5s",
            concurrency=32, timeout="5s", wait=True, configuration=config,
        )  # fmt: skip
        sent = summary["sent"]
        codes = {str(k): int(v) for k, v in summary["status"].items()}
        assert sum(codes.values()) == sent and codes.get("503", 0) > 0 and codes.get("200", 0) > 0
        wait_for(
            lambda: query_value(total, configuration=config) == 8 + sent, what="the replay scraped"
        )
        client = codes["503"] / sent
        server = status_ratio("503", selector=sel, window="1m", configuration=config)
        print(f"503 ratio: Prometheus {server:.4f}, replay {client:.4f}, statuses {codes}")
        assert server == pytest.approx(client, abs=0.03), (server, client, codes)


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\necho 'err: bad flag' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(PrometheusError, match="did not become ready") as exc:
        start(["127.0.0.1:1"], tmp_path / "w", binary=str(fake), ready_timeout=5)
    assert "bad flag" in str(exc.value)
    assert not (tmp_path / "w" / "prometheus.pid").exists()


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(PrometheusError, match="apt-get install prometheus"):
        start(["127.0.0.1:1"], tmp_path, binary=str(tmp_path / "nope"))
