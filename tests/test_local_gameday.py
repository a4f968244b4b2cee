"""``make demo``'s game day end to end: the Go orders service under a real cgroup limit, the
recorded capture replayed, stress, the leak, a real Prometheus; everything restored and stopped.
And the fallback when Prometheus or Go is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from chaosmem.ledger import Ledger
from chaosmem.targets.cgroup import Cgroup
from chaosmem.traffic.capture import GOR_SEPARATOR
from tests.conftest import REPO

RUN_DEMO = [sys.executable, str(REPO / "demo" / "run_demo.py")]
CAPTURE = REPO / "experiments" / "captures" / "orders.gor"


@pytest.fixture(scope="module")
def orders_binary() -> Path:
    """``make orders``, as ``make demo`` runs it (cached when the sources did not change)."""
    done = subprocess.run(
        ["make", "--no-print-directory", "orders"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return REPO / "demo" / "bin" / "orders"


def _pids_running(executable: Path) -> list[int]:
    """Processes whose executable is ``executable`` (by /proc, not by name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "exe") == str(executable):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def run_demo(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        RUN_DEMO,
        cwd=REPO,
        env={
            **os.environ,
            "DEMO_REPORTS": str(tmp_path / "reports"),
            "DEMO_STATE": str(tmp_path / "state"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def outputs(journal: dict[str, Any]) -> dict[str, Any]:
    return {r["activity"]["name"]: r.get("output") for r in journal["run"]}


@pytest.mark.slow
def test_the_game_day_runs_end_to_end_and_leaves_nothing_behind(
    tmp_path: Path, orders_binary: Path
) -> None:
    before_children = set(Cgroup.of_process("self").path.iterdir())
    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{tmp_path}/reports/local-gameday.html: ")
    journal = json.loads((tmp_path / "reports" / "local-gameday-journal.json").read_text())
    got = outputs(journal)
    verdict = last.split(": ", 2)[1]
    assert verdict in {"PASSED", "DEVIATED", "FAILED", "INTERRUPTED"}
    # the service ran under the production-like limit, then the tightened one
    tightened = got["tighten-limit"]
    assert tightened["before"] == 256 * 2**20 and tightened["after"] == 160 * 2**20
    # the recorded capture was replayed, and answered
    summary = got["replay-summary"]
    assert summary["capture"]["files"] == ["experiments/captures/orders.gor"]
    assert summary["completed"] > 100
    # the stressor grew in the service's cgroup, the leak was turned on
    assert got["grow-stress-beside-the-service"]["cgroup"] == tightened["target"]["path"]
    assert got["turn-on-the-session-cache-leak"]["body"]["leak"] is True
    # Go's view against the cgroup's, while leaking
    health = got["go-memory-health-while-leaking"]
    assert 0 <= health["score"] <= 100 and health["pattern"]
    assert health["cgroup"]["limit"] == 160 * 2**20 and health["cgroup"]["working_set"] > 0
    assert health["latest"]["HeapInuse"] > 0 and health["latest"]["GOMEMLIMIT"] == 100 * 2**20
    # OOM kills, the 503 ratio client-side and through Prometheus: real numbers
    assert got["oom-kills-before"] == 0
    assert isinstance(got["oom-kills-after"], int)
    assert 0.0 <= got["503-ratio-client-side"] <= 1.0
    assert 0.0 <= got["503-ratio-prometheus"] <= 1.0
    if got["oom-kills-after"]:
        assert verdict == "DEVIATED"
        ext = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
        assert ext["oom_kills"], "an OOM kill is on the timeline with its time"
    # reports
    for name in ("local-gameday.html", "local-gameday.md", "local-gameday-junit.xml"):
        assert (tmp_path / "reports" / name).stat().st_size > 0
    ET.parse(tmp_path / "reports" / "local-gameday-junit.xml")
    md = (tmp_path / "reports" / "local-gameday.md").read_text()
    assert "Go memory health at +" in md and f"**{health['pattern']}**" in md
    html = (tmp_path / "reports" / "local-gameday.html").read_text()
    assert "go-memory-health-while-leaking" in html and "503-ratio-prometheus" in html
    # nothing left behind: no ledger entry, no orders process, no Prometheus, no child cgroup
    assert not Ledger(tmp_path / "state").read().open()
    assert _pids_running(orders_binary) == []
    demo_servers = [
        pid
        for pid in _pids_running(Path("/usr/bin/prometheus"))
        if b"chaosmem-demo-prometheus-" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert demo_servers == []
    service_cgroup = Path(tightened["target"]["path"])
    assert not service_cgroup.exists()
    assert service_cgroup not in before_children


def test_without_prometheus_the_demo_says_so_and_runs_local_oom(tmp_path: Path) -> None:
    done = run_demo(tmp_path, DEMO_PROMETHEUS="/nonexistent/prometheus")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "missing Prometheus (Debian package `prometheus`)" in done.stdout
    assert "running experiments/local-oom.json instead" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{tmp_path}/reports/local-oom.html: PASSED")
    assert not Ledger(tmp_path / "state").read().open()


def test_the_bundled_capture_is_a_goreplay_recording_of_the_orders_api() -> None:
    data = CAPTURE.read_bytes()
    records = [r for r in data.split(GOR_SEPARATOR) if r]
    assert len(records) > 1000
    headers = [r.split(b"\n", 1)[0].split() for r in records]
    assert {h[0] for h in headers} == {b"1"}  # requests, as goreplay records them by default
    stamps = [int(h[2]) for h in headers]
    span = (max(stamps) - min(stamps)) / 1e9
    assert 20 < span < 40  # recorded over ~30 s of real time
    targets = [r.split(b"\n", 2)[1].split(b" ")[:2] for r in records]
    methods = {m for m, _ in targets}
    assert methods == {b"GET", b"POST"}
    paths = {t.split(b"?")[0] for _, t in targets}
    assert {b"/orders", b"/healthz", b"/spike"} <= paths
