"""The Go and Prometheus timeline sources in a real ``chaos run``: the demo service started by
the control in its own memory cgroup with gctrace on, leaked towards its limit (heap profile at
90 % of it), then OOM-killed by a spike, while a real Prometheus scrapes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosmem.prometheus.probes import query_value
from demo.prometheus import start as start_prometheus
from tests.chaos_run import chaos_run
from tests.conftest import free_port
from tests.orders_support import ORDERS_BIN, build_orders
from tests.prom_support import wait_for

MiB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    build_orders()


def _experiment(port: int, prom_url: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    return {
        "title": "orders leaks to its limit",
        "description": "go + prometheus timeline sources",
        "configuration": {"prometheus_base_url": prom_url},
        "controls": [
            {
                "name": "chaosmem",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.control",
                    "arguments": {
                        "interval": "0.25s",
                        "services": [
                            {
                                "name": "orders",
                                "command": [str(ORDERS_BIN)],
                                "memory_limit": "160Mi",
                                "env": {"ORDERS_ADDR": f"127.0.0.1:{port}", "GODEBUG": "gctrace=1"},
                                "ready_url": f"{base}/healthz",
                            }
                        ],
                        "go": {"url": f"{base}/debug/vars"},
                        "prometheus_queries": {
                            "orders_heap_inuse": 'sum(go_memstats_heap_inuse_bytes{job="orders"})',
                            "never_there": "sum(no_such_metric)",
                        },
                    },
                },
            }
        ],
        "method": [
            {
                "type": "action",
                "name": "leak-to-92pct",
                "provider": {
                    "type": "python",
                    "module": "tests.orders_support",
                    "func": "leak_until",
                    "arguments": {"url": base, "fraction": 0.92},
                },
                "pauses": {"after": 4},
            },
            {
                "type": "probe",
                "name": "health",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.gomem.probes",
                    "func": "memory_health",
                    "arguments": {
                        "url": f"{base}/debug/vars",
                        "target": {"type": "service", "name": "orders"},
                        "window": "0s",
                    },
                },
            },
            {
                "type": "action",
                "name": "spike-to-oom",
                "provider": {
                    "type": "http",
                    "url": f"{base}/spike?size=512Mi",
                    "timeout": 20,
                },
                "pauses": {"after": 2},
            },
        ],
        "rollbacks": [],
    }


def test_go_memory_gctrace_evidence_and_prometheus_on_the_timeline(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    port = free_port()
    with start_prometheus({"orders": [f"127.0.0.1:{port}"]}, tmp_path / "prom") as prom:
        # scraping (the target still down) before the run starts: the leak lasts about a second
        config = {"prometheus_base_url": prom.url}
        wait_for(lambda: query_value('count(up{job="orders"})', configuration=config) == 1)
        code, journal_path = chaos_run(tmp_path, "go-timeline", _experiment(port, prom.url))
    journal = json.loads(journal_path.read_text())
    ext = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    samples = [r for r in ext["timeline"] if r["kind"] == "sample"]
    go = [s["go"] for s in samples if "go" in s]
    assert go, "no go samples"
    assert any(g.get("HeapInuse", 0) > 50 * MiB for g in go)
    assert all(k in go[1] for k in ("HeapInuse", "HeapIdle", "HeapReleased", "Sys", "NextGC"))
    # gctrace from the service's log, this run's lines only
    gcs = [g["gc"] for g in go if "gc" in g]
    assert gcs and sum(g["count"] for g in gcs) >= 2
    assert max(g["heap_live"] for g in gcs) >= 32 * MiB
    # the working set beside usage and limit
    rows = [row for s in samples for row in s.get("targets", []) if "working_set" in row]
    assert rows and all(0 < r["working_set"] <= r["usage"] for r in rows)
    assert rows[0]["limit"] == 160 * MiB
    # evidence at 90 %: the heap profile names the leak's allocation site
    evidence = [e for g in go for e in g.get("evidence", [])]
    crossing = [e for e in evidence if e["reason"] == "working-set-90pct"]
    assert crossing, evidence
    first = crossing[0]
    assert Path(first["heap_profile"]).stat().st_size > 0
    assert first["goroutines"] >= 2
    assert any("sessionCache" in row["function"] for row in first["top"]), first["top"]
    # the OOM kill: a kill mark, and a capture attempt at it (the service is dead by then)
    assert ext["oom_kills"], ext["oom_kills"]
    assert any(e["reason"].startswith("oom-kill-") for e in evidence), evidence
    # the Prometheus query's value over the run; the missing series says so once
    prom_samples = [s["prometheus"] for s in samples if "prometheus" in s]
    assert any((p.get("orders_heap_inuse") or 0) > 50 * MiB for p in prom_samples)
    assert all(p["never_there"] is None for p in prom_samples)
    errors = [
        p["errors"]["never_there"] for p in prom_samples if "never_there" in p.get("errors", {})
    ]
    assert len(errors) == 1 and "matched no series" in errors[0]
    # the health probe saw the pressure
    health = next(r for r in journal["run"] if r["activity"]["name"] == "health")["output"]
    assert health["pattern"] in {"near-limit", "heap-leak", "no-gomemlimit"}
    assert "near-limit" in [f["rule"] for f in health["findings"]]
    # nothing left running: the service the control started is gone
    started = next(r for r in ext["timeline"] if r.get("event") == "service-start")
    proc = Path(f"/proc/{started['pid']}")
    assert not proc.exists() or str(ORDERS_BIN).encode() not in (proc / "cmdline").read_bytes(), (
        proc / "status"
    ).read_text()
    assert code in (0, 1)
    # the report draws Go's view and the working set on the memory chart
    html = tmp_path / "report.html"
    chaosmem = Path(sys.executable).with_name("chaosmem")
    subprocess.run([str(chaosmem), "report", str(journal_path), "-o", str(html)], check=True)
    page = html.read_text()
    memory_svg = page[page.index("Memory: usage against the limit") :]
    memory_svg = memory_svg[: memory_svg.index("</svg>")]
    for line in ("Go HeapInuse", "Go HeapIdle", "Go HeapReleased", "Go NextGC", "Go Sys"):
        assert line in memory_svg, line
    assert "orders working set" in memory_svg
    assert page.count(">Go HeapInuse<") == 1  # one chart tells it: no separate Go chart
    evidence_table = page[page.index("Evidence before the kill") :]
    assert "working-set-90pct" in evidence_table and "sessionCache" in evidence_table
    md = tmp_path / "report.md"
    subprocess.run([str(chaosmem), "report", str(journal_path), "-o", str(md)], check=True)
    text = md.read_text()
    evidence_md = text[text.index("Evidence before the kill") :]
    assert "working-set-90pct" in evidence_md and "sessionCache" in evidence_md


@pytest.mark.parametrize(
    "arguments",
    [
        {"go": {"url": "http://10.0.0.1:1/debug/vars"}},
        {"go": {"url": "http://127.0.0.1:1/debug/vars", "evidence_at": 2}},
        {"go": {"url": "http://127.0.0.1:1/debug/vars", "colour": "red"}},
        {"prometheus_queries": {"../x": "up"}},
        {"prometheus_queries": {"ok": "up"}},  # no prometheus_base_url in the configuration
    ],
)
def test_bad_control_arguments_interrupt_the_run(
    tmp_path: Path, state: dict[str, Any], arguments: dict[str, Any]
) -> None:
    experiment = {
        "title": "bad go argument",
        "description": "x",
        "controls": [
            {
                "name": "chaosmem",
                "provider": {
                    "type": "python",
                    "module": "chaosmem.control",
                    "arguments": arguments,
                },
            }
        ],
        "method": [
            {
                "type": "probe",
                "name": "p",
                "provider": {
                    "type": "python",
                    "module": "os.path",
                    "func": "exists",
                    "arguments": {"path": "/"},
                },
            }
        ],
    }
    code, journal_path = chaos_run(tmp_path, "bad-go", experiment)
    journal = json.loads(journal_path.read_text())
    assert journal["status"] in {"interrupted", "aborted"}
    assert code != 0
