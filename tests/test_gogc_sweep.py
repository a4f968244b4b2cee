"""``chaosmem sweep`` over experiments/gogc-sweep.json: real chaos runs of the Go demo service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import InvalidArgument
from chaosmem.gomem.sweep import parse_grid
from tests.conftest import REPO, free_port
from tests.orders_support import build_orders

CHAOSMEM = Path(sys.executable).with_name("chaosmem")


def test_sweep_runs_each_setting_and_summarises(tmp_path: Path, state: dict[str, Any]) -> None:
    build_orders()
    out = tmp_path / "sweep"
    port = free_port()
    done = subprocess.run(
        [
            str(CHAOSMEM), "sweep", "experiments/gogc-sweep.json",
            "--grid", "gogc=100,400", "--grid", "gomemlimit=120MiB",
            "--grid", "duration=6s", "--grid", "rate=50", "--grid", f"orders_port={port}",
            "-o", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[1/2] gogc=100 gomemlimit=120MiB" in done.stdout
    assert "[2/2] gogc=400" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert [r["settings"]["gogc"] for r in runs] == ["100", "400"]
    for run in runs:
        assert run["status"] == "completed", run
        assert run["limit"] == 160 * 2**20
        assert 4 * 2**20 < run["peak_usage"] < 160 * 2**20
        assert 0 < run["peak_working_set"] <= run["peak_usage"]
        assert run["oom_kills"] == 0
        # 50 req/s for 6 s, the same schedule for every setting: never more than it holds, and
        # nearly all of it sent (a loaded machine may leave the last few due when 6 s end).
        assert 270 <= run["requests"] <= 300
        assert run["ratio_503"] == 0.0 and run["no_answer"] == 0
        assert run["peak_heap_inuse"] > 0
        assert Path(run["journal"]).is_file()
    md = (out / "summary.md").read_text()
    assert "| gogc | gomemlimit |" in md and "| 400 | 120MiB |" in md
    page = (out / "summary.html").read_text()
    assert "<td>400</td>" in page and "<script" not in page


@pytest.mark.parametrize(
    "grid",
    [
        [],
        ["gogc"],
        ["../x=1"],
        ["gogc=1,2", "gogc=3"],
        ["gogc=a b"],
        ["gogc=<script>"],
        ["a=" + ",".join(map(str, range(11))), "b=" + ",".join(map(str, range(10)))],
    ],
)
def test_bad_grids_are_refused(grid: list[str]) -> None:
    with pytest.raises(InvalidArgument, match="--grid"):
        parse_grid(grid)


def test_cli_names_a_missing_experiment(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CHAOSMEM), "sweep", str(tmp_path / "nope.json"), "--grid", "gogc=1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "experiment" in done.stderr
