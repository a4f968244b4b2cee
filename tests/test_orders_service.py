"""The Go demo service against its README contract, as a real process over HTTP."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.orders_support import ORDERS_BIN, OrdersService, build_orders, get_json, http

ORDER = json.dumps(
    {"customer": "ann", "items": [{"sku": "a-1", "quantity": 2, "price": 3.5}]}
).encode()


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    build_orders()


@pytest.fixture
def orders(tmp_path: Path) -> Iterator[OrdersService]:
    with OrdersService(tmp_path / "orders.log", env={"GOMEMLIMIT": "300MiB", "GOGC": "50"}) as svc:
        yield svc


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http("GET", f"{url}/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_build_is_cached() -> None:
    before = ORDERS_BIN.stat().st_mtime_ns
    out = subprocess.run(
        ["make", "--no-print-directory", "orders"],
        cwd=ORDERS_BIN.parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "go build" not in out.stdout
    assert ORDERS_BIN.stat().st_mtime_ns == before


def test_orders_roundtrip_and_validation(orders: OrdersService) -> None:
    status, body = http("POST", f"{orders.url}/orders", ORDER)
    assert status == 201
    saved = json.loads(body)
    assert saved["total"] == 7.0 and saved["id"] == 1
    listed = get_json(f"{orders.url}/orders?limit=5")
    assert listed["count"] == 1 and listed["orders"][0]["customer"] == "ann"
    assert http("POST", f"{orders.url}/orders", b"{not json")[0] == 400
    bad_qty = json.dumps({"customer": "x", "items": [{"sku": "a", "quantity": 0, "price": 1}]})
    status, body = http("POST", f"{orders.url}/orders", bad_qty.encode())
    assert status == 422 and b"quantity" in body
    assert http("GET", f"{orders.url}/orders?limit=100000")[0] == 400
    assert http("DELETE", f"{orders.url}/orders")[0] == 405
    assert http("POST", f"{orders.url}/orders", b"[" * (2 << 20))[0] == 400


def test_metrics_count_requests_by_code_and_export_go_runtime(orders: OrdersService) -> None:
    for _ in range(3):
        http("GET", f"{orders.url}/orders")
    http("POST", f"{orders.url}/orders", b"{}")
    found = samples(orders.url)
    key = ("http_requests_total", (("code", "200"), ("method", "GET"), ("path", "/orders")))
    assert found[key] == 3
    key422 = ("http_requests_total", (("code", "422"), ("method", "POST"), ("path", "/orders")))
    assert found[key422] == 1
    for name in (
        "go_memstats_heap_inuse_bytes",
        "go_memstats_heap_idle_bytes",
        "go_memstats_heap_released_bytes",
        "go_memstats_sys_bytes",
        "go_memstats_next_gc_bytes",
        "go_goroutines",
    ):
        assert found[(name, ())] > 0, name
    assert found[("go_gc_gomemlimit_bytes", ())] == 300 * 2**20
    assert found[("go_gc_gogc_percent", ())] == 50


def test_expvar_and_pprof(orders: OrdersService) -> None:
    data = get_json(f"{orders.url}/debug/vars")
    assert data["memstats"]["HeapSys"] >= data["memstats"]["HeapInuse"] > 0
    assert data["runtime"]["gomemlimit"] == 300 * 2**20 and data["runtime"]["gogc"] == 50
    assert data["goroutines"] >= 1
    status, body = http("GET", f"{orders.url}/debug/pprof/goroutine?debug=2")
    assert status == 200 and b"goroutine " in body
    status, body = http("GET", f"{orders.url}/debug/pprof/heap")
    assert status == 200 and body[:2] == b"\x1f\x8b"  # gzipped profile.proto


def test_leak_mode_grows_the_heap_and_drop_frees_it(orders: OrdersService) -> None:
    base = get_json(f"{orders.url}/debug/vars")["memstats"]["HeapInuse"]
    assert base < 20 * 2**20
    status, body = http("POST", f"{orders.url}/admin/leak?on=1&size=1Mi")
    assert status == 200 and json.loads(body)["leak"] is True
    for _ in range(40):
        assert http("GET", f"{orders.url}/orders")[0] == 200
    data = get_json(f"{orders.url}/debug/vars")
    assert data["orders"]["leak_entries"] == 40 and data["orders"]["leak_bytes"] == 40 * 2**20
    assert data["memstats"]["HeapInuse"] >= 40 * 2**20  # the leaked buffers are live heap
    assert samples(orders.url)[("orders_session_cache_bytes", ())] == 40 * 2**20
    # off: nothing more leaks, what leaked stays
    http("POST", f"{orders.url}/admin/leak?on=0")
    http("GET", f"{orders.url}/orders")
    assert get_json(f"{orders.url}/debug/vars")["orders"]["leak_entries"] == 40
    status, body = http("POST", f"{orders.url}/admin/leak?drop=1")
    assert json.loads(body)["bytes"] == 0
    assert http("POST", f"{orders.url}/admin/leak?on=maybe")[0] == 400
    assert http("POST", f"{orders.url}/admin/leak?size=1Ti")[0] == 400
    assert http("GET", f"{orders.url}/admin/leak?on=1")[0] == 405


def test_leak_env_turns_it_on_from_the_start(tmp_path: Path) -> None:
    with OrdersService(
        tmp_path / "o.log", env={"ORDERS_LEAK": "1", "ORDERS_LEAK_SIZE": "16Ki"}
    ) as svc:
        http("GET", f"{svc.url}/orders")
        assert get_json(f"{svc.url}/debug/vars")["orders"]["leak_bytes"] == 16 * 1024


def test_spike_allocates_transiently_and_validates(orders: OrdersService) -> None:
    status, body = http("GET", f"{orders.url}/spike?size=16Mi")
    assert status == 200 and json.loads(body)["allocated"] == 16 * 2**20
    ms = get_json(f"{orders.url}/debug/vars")["memstats"]
    assert ms["TotalAlloc"] >= 16 * 2**20
    for bad in ("size=-1", "size=nan", "size=1e400", "size=3Gi", "hold=1h", "size=abc"):
        assert http("GET", f"{orders.url}/spike?{bad}")[0] == 400, bad


def test_sheds_with_503_above_the_inflight_limit(tmp_path: Path) -> None:
    env = {"ORDERS_MAX_INFLIGHT": "2", "ORDERS_LATENCY": "500ms"}
    with OrdersService(tmp_path / "o.log", env=env) as svc:
        codes: list[int] = []
        lock = threading.Lock()

        def call() -> None:
            code = http("GET", f"{svc.url}/orders", timeout=30)[0]
            with lock:
                codes.append(code)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes.count(200) >= 1 and codes.count(503) >= 1
        assert codes.count(200) + codes.count(503) == 8
        # observability is never shed
        assert http("GET", f"{svc.url}/metrics")[0] == 200
        found = samples(svc.url)
        shed = ("http_requests_total", (("code", "503"), ("method", "GET"), ("path", "/orders")))
        assert found[shed] == codes.count(503)
        assert get_json(f"{svc.url}/debug/vars")["orders"]["shed_requests"] == codes.count(503)


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"ORDERS_MAX_INFLIGHT": "0"}, [], "ORDERS_MAX_INFLIGHT"),
        ({"ORDERS_LEAK": "yes"}, [], "ORDERS_LEAK"),
        ({"ORDERS_LEAK_SIZE": "1e99"}, [], "ORDERS_LEAK_SIZE"),
        ({"ORDERS_LATENCY": "-1s"}, [], "ORDERS_LATENCY"),
        ({}, ["-addr", "0.0.0.0:0"], "-addr"),
        ({}, ["-addr", "nonsense"], "-addr"),
    ],
)
def test_bad_settings_exit_2_naming_them(
    tmp_path: Path, env: dict[str, str], args: list[str], named: str
) -> None:
    out = subprocess.run(
        [str(ORDERS_BIN), *args],
        env={"PATH": "/usr/bin:/bin", "ORDERS_ADDR": "127.0.0.1:0", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert named in out.stderr


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    svc = OrdersService(tmp_path / "o.log")
    assert svc.stop() == 0
    assert "shutting down" in (tmp_path / "o.log").read_text()
