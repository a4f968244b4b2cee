"""chaosmem.gomem: MemStats from the real demo service (expvar and Prometheus text), the health
rules on series recorded from it (tests/data/gomem/record.py), and memory_health on the live
service in a real memory cgroup."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.gomem.health import RULES, judge
from chaosmem.gomem.memstats import FIELDS, GoMemError, parse_expvar, parse_prometheus
from chaosmem.gomem.probes import go_memstats, heap_retained_ratio, memory_health
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import free_port
from tests.orders_support import OrdersService, build_orders, http

DATA = Path(__file__).resolve().parent / "data" / "gomem"
MiB = 1 << 20


def series(name: str) -> list[dict[str, float]]:
    return list(json.loads((DATA / f"{name}.json").read_text()))


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    build_orders()


@pytest.fixture
def orders(tmp_path: Path) -> Iterator[OrdersService]:
    with OrdersService(tmp_path / "orders.log", env={"GOMEMLIMIT": "256MiB"}) as svc:
        yield svc


def test_expvar_and_prometheus_give_the_same_fields(orders: OrdersService) -> None:
    by_vars = go_memstats(f"{orders.url}/debug/vars")
    by_prom = go_memstats(f"{orders.url}/metrics")
    for name in FIELDS:
        assert by_vars[name] > 0 or name == "HeapReleased", name
        assert by_prom[name] >= 0, name
    # two reads a moment apart: the slow-moving fields agree
    assert by_prom["HeapSys"] == pytest.approx(by_vars["HeapSys"], rel=0.5)
    assert by_vars["GOMEMLIMIT"] == by_prom["GOMEMLIMIT"] == 256 * MiB
    assert by_vars["Goroutines"] >= 1 and by_prom["Goroutines"] >= 1
    assert by_vars["GOGC"] == by_prom["GOGC"] == 100
    assert "NumGC" in by_prom and "PauseTotalNs" in by_prom


def test_heap_retained_ratio_is_a_fraction(orders: OrdersService) -> None:
    ratio = heap_retained_ratio(f"{orders.url}/debug/vars")
    assert 0.0 <= ratio <= 1.0


def test_unreachable_and_wrong_endpoints_say_so(orders: OrdersService) -> None:
    with pytest.raises(GoMemError, match="unreachable"):
        go_memstats(f"http://127.0.0.1:{free_port()}/debug/vars")
    with pytest.raises(GoMemError, match="HTTP 404"):
        go_memstats(f"{orders.url}/nope")
    with pytest.raises(GoMemError):
        go_memstats(f"{orders.url}/healthz")  # text, but no go_memstats_*
    with pytest.raises(InvalidArgument, match="'url'"):
        go_memstats("http://10.1.2.3:8080/debug/vars")


def test_parsers_refuse_bad_numbers_and_shapes() -> None:
    good = {name: 1 for name in FIELDS}
    assert parse_expvar(json.dumps({"memstats": good}))["HeapInuse"] == 1
    with pytest.raises(GoMemError, match="lacks"):
        parse_expvar(json.dumps({"memstats": {"HeapInuse": 1}}))
    with pytest.raises(GoMemError, match="finite"):
        parse_expvar(json.dumps({"memstats": {**good, "Sys": 1e400}}).replace("Infinity", "1e400"))
    with pytest.raises(GoMemError, match="number"):
        parse_expvar(json.dumps({"memstats": {**good, "Sys": "1"}}))
    with pytest.raises(GoMemError, match="not JSON"):
        parse_expvar("[" * 100_000)
    with pytest.raises(GoMemError, match="larger"):
        parse_expvar(" " * (5 << 20))
    text = "".join(f"go_memstats_{n}_bytes 1\n" for n in ("heap_inuse", "heap_idle"))
    with pytest.raises(GoMemError, match="no go_memstats_"):
        parse_prometheus(text)
    full = (DATA / "metrics.txt").read_text()
    assert parse_prometheus(full)["HeapInuse"] > 0
    with pytest.raises(GoMemError, match="finite"):
        parse_prometheus(
            re.sub(r"(?m)^go_memstats_sys_bytes .*$", "go_memstats_sys_bytes NaN", full)
        )


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=20))  # fmt: skip
def test_expvar_parser_only_ever_raises_its_own_error(value: Any) -> None:
    for doc in (value, {"memstats": value}, {"memstats": {name: value for name in FIELDS}}):
        try:
            text = json.dumps(doc)
        except (ValueError, OverflowError):
            continue
        try:
            out = parse_expvar(text)
        except GoMemError:
            continue
        assert all(isinstance(v, float) for v in out.values())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_prometheus_parser_only_ever_raises_its_own_error(text: str) -> None:
    with contextlib.suppress(GoMemError):
        parse_prometheus(text)


# -- the rules, on series recorded from the demo service -------------------------------------


def test_steady_traffic_is_healthy() -> None:
    health = judge(series("steady"))
    assert health.score == 100 and health.pattern == "healthy" and not health.findings


def test_leak_mode_is_named_a_heap_leak() -> None:
    health = judge(series("leak"))
    assert health.pattern == "heap-leak"
    assert health.score == 100 - RULES["heap-leak"]
    assert "never-evicted" in health.findings[0].message


def test_stuck_requests_are_a_goroutine_leak() -> None:
    health = judge(series("goroutines"))
    assert health.pattern == "goroutine-leak"
    assert health.findings[0].evidence["goroutines_last"] >= 300


def test_a_freed_spike_is_not_a_leak() -> None:
    assert judge(series("spike")).pattern == "healthy"


def test_too_few_gcs_or_samples_make_no_trend_claim() -> None:
    leak = series("leak")
    assert judge(leak[:2]).pattern == "healthy"
    frozen = [{**s, "NumGC": leak[0]["NumGC"]} for s in leak]
    assert judge(frozen).pattern == "healthy"


def test_cgroup_rules_set_page_cache_apart() -> None:
    steady = series("steady")  # GOMEMLIMIT 400MiB
    latest = steady[-1]
    go_resident = latest["Sys"] - latest["HeapReleased"]
    roomy = {"limit": 1024 * MiB, "usage": 600 * MiB, "working_set": 100 * MiB,
             "anon": go_resident + 10 * MiB, "file": 500 * MiB}  # fmt: skip
    # lots of page cache is not Go's problem and not off-heap: healthy
    assert judge(steady, roomy).pattern == "healthy"
    off_heap = {**roomy, "anon": go_resident + 200 * MiB}
    assert judge(steady, off_heap).pattern == "off-heap"
    tight = {**roomy, "limit": 300 * MiB, "working_set": 280 * MiB}
    rules = [f.rule for f in judge(steady, tight).findings]
    assert rules == ["gomemlimit-above-limit", "near-limit"]
    unset = [{**s, "GOMEMLIMIT": float(2**63 - 1)} for s in steady]
    assert [f.rule for f in judge(unset, roomy).findings] == ["no-gomemlimit"]


def test_idle_heap_retained_rule() -> None:
    # Go 1.19 returned the recorded spike's 256Mi at once (HeapReleased follows HeapIdle), so
    # the retained case is the spike's last snapshot with the scavenger's work undone.
    last = series("spike")[-1]
    assert judge([last]).pattern == "healthy"
    retained = {**last, "HeapReleased": 2 * MiB}
    found = judge([retained])
    assert (
        found.pattern == "idle-heap-retained" and found.score == 100 - RULES["idle-heap-retained"]
    )


def test_gc_thrash_is_flagged() -> None:
    steady = series("steady")
    thrash = [*steady[:-1], {**steady[-1], "GCCPUFraction": 0.4}]
    assert judge(thrash).pattern == "gc-pause-growth"


# -- live: the demo service in a real memory cgroup ------------------------------------------


def _in_cgroup(group: Cgroup) -> Any:
    fd = os.open(group.path / "cgroup.procs", os.O_WRONLY | os.O_APPEND)

    def enter() -> None:
        os.write(fd, b"%d\n" % os.getpid())

    return fd, enter


def test_memory_health_of_the_live_service_falls_in_leak_mode(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    cgroup.set_memory_limit(768 * MiB)
    fd, enter = _in_cgroup(cgroup)
    try:
        svc = OrdersService(
            tmp_path / "o.log", env={"GOMEMLIMIT": "700MiB", "GOGC": "50"}, preexec=enter
        )
    finally:
        os.close(fd)
    target = {"type": "cgroup", "path": str(cgroup.path)}
    stop = threading.Event()

    def traffic() -> None:
        # paced (<= 50 req/s): in leak mode <= 25Mi/s, far from the limit within the window
        while not stop.wait(0.02):
            http("GET", f"{svc.url}/orders")

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        calm = memory_health(f"{svc.url}/debug/vars", target=target, window="2s", interval="0.5s")
        calm_rules = {f["rule"] for f in calm["findings"]}
        # NB: not "== healthy": on a shared, CPU-starved host GC pauses may stretch for real
        assert not calm_rules & {"heap-leak", "goroutine-leak", "near-limit", "off-heap"}, calm
        assert calm["cgroup"]["limit"] == 768 * MiB
        assert 0 < calm["cgroup"]["working_set"] <= calm["cgroup"]["usage"]
        http("POST", f"{svc.url}/admin/leak?on=1&size=512Ki")
        leaking = memory_health(f"{svc.url}/metrics", target=target, window="4s", interval="0.5s")
        assert leaking["pattern"] == "heap-leak", leaking["summary"]
        assert leaking["score"] < calm["score"]
    finally:
        stop.set()
        worker.join()
        http("POST", f"{svc.url}/admin/leak?on=0&drop=1")
        svc.stop()


def test_memory_health_validates_its_window() -> None:
    with pytest.raises(InvalidArgument, match="'window'"):
        memory_health("http://127.0.0.1:9/debug/vars", window="1h", interval="0.05s")
    with pytest.raises(InvalidArgument, match="'interval'"):
        memory_health("http://127.0.0.1:9/debug/vars", interval="0s")
    with pytest.raises(ChaosmemError):
        memory_health(f"http://127.0.0.1:{free_port()}/debug/vars", window="0s")


_size = st.floats(0, 2**40, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {name: _size for name in FIELDS},
            optional={"NumGC": _size, "HeapObjects": _size, "Goroutines": _size,
                      "PauseTotalNs": _size, "GCCPUFraction": st.floats(0, 1),
                      "GOMEMLIMIT": _size},
        ),
        min_size=1, max_size=8,
    ),
    st.none() | st.fixed_dictionaries(
        {"limit": st.none() | _size, "usage": _size, "working_set": _size, "anon": _size, "file": _size}
    ),
)  # fmt: skip
def test_judge_scores_any_finite_series(
    stats: list[dict[str, float]], cgroup: dict[str, Any] | None
) -> None:
    samples = [{"t": float(i), **s} for i, s in enumerate(stats)]
    health = judge(samples, cgroup)
    assert 0 <= health.score <= 100
    assert health.pattern == (health.findings[0].rule if health.findings else "healthy")
    assert health.score == max(0, 100 - sum(f.penalty for f in health.findings))
    json.dumps(health.as_dict())


def test_gc_pause_growth_needs_a_trend_not_one_slow_pause() -> None:
    steady = series("steady")  # 26 GCs over 16 samples
    half = len(steady) // 2
    gcs0 = steady[0]["NumGC"]

    def paused(first_ms: float, second_ms: float) -> list[dict[str, float]]:
        out, total = [], 0.0
        for i, s in enumerate(steady):
            new = s["NumGC"] - (steady[i - 1]["NumGC"] if i else gcs0)
            total += new * (first_ms if i <= half else second_ms) * 1e6
            out.append({**s, "PauseTotalNs": total})
        return out

    assert judge(paused(0.5, 8.0)).pattern == "gc-pause-growth"
    assert judge(paused(0.5, 0.9)).pattern == "healthy"  # doubled, but under 5 ms
    assert judge(paused(4.0, 6.0)).pattern == "healthy"  # slow, but no trend
    one_slow = [dict(s) for s in steady]
    one_slow[-1]["PauseTotalNs"] = one_slow[-2]["PauseTotalNs"] + 50e6
    one_slow[-1]["NumGC"] = one_slow[-2]["NumGC"] + 1
    assert judge(one_slow).pattern == "healthy"
