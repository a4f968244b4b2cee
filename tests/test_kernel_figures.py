"""The kernel's own figures on a real kernel: the peak it kept, and what it knew at a kill (the
``kernel``-marked ones also on cgroup v2, in the VM lane).

Sampling every second misses the spike that causes a kill; the kernel does not: its peak usage
(``memory.max_usage_in_bytes``, reset at the run's start) and its OOM report (usage, limit,
``memory.stat`` and the victim, from its log) are what reports show.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.report.charts import colour, memory_chart, time_span
from chaosmem.report.series import build_series
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.kmsg import KmsgReader, parse_record
from chaosmem.targets.oomwatch import OomWatcher
from chaosmem.timeline import Recorder

MIB = 1 << 20
HOG = "import sys; b = bytearray(int(sys.argv[1]) << 20); b[::4096] = b'x' * len(b[::4096])"


def _hog(group: Cgroup, mib: int) -> subprocess.Popen[bytes]:
    return group.spawn([sys.executable, "-c", HOG, str(mib)])


@pytest.mark.kernel
def test_an_oom_event_carries_what_the_kernel_knew_at_the_kill(cgroup: Cgroup) -> None:
    cgroup.set_memory_limit(32 * MIB)
    with OomWatcher(cgroup) as watcher:
        victim = _hog(cgroup, 100)
        victim.wait(30)
        deadline = time.monotonic() + 5
        while not watcher.events and time.monotonic() < deadline:
            time.sleep(0.05)
    assert victim.returncode == -9
    [event] = watcher.events
    details = event.detail
    assert details["source"] == "kernel log"
    assert details["victim_pid"] == victim.pid
    assert details["victim_command"].startswith("python")
    assert details["limit"] == 32 * MIB
    # The usage *at* the kill: at the limit, not the near-zero the cgroup shows afterwards.
    assert abs(details["usage"] - 32 * MIB) <= 0.05 * 32 * MIB
    assert cgroup.memory_usage() < 0.5 * 32 * MIB
    assert details["stat"]["anon"] >= 0.8 * 32 * MIB and "file" in details["stat"]
    # The kernel's time of the kill, before the watcher could see it.
    assert event.monotonic <= time.monotonic()
    assert event.at <= time.time()


def test_kmsg_parser_ignores_what_is_not_a_record() -> None:
    assert parse_record(b"garbage") is None
    assert parse_record(b"6,1,x,-;hello") is None
    assert parse_record(b"6,1,2500000,-;hello\n KEY=v") == (2.5, "hello")


def test_kmsg_reader_reads_only_from_now_on() -> None:
    reader = KmsgReader()
    try:
        assert reader.read() == []  # earlier OOM reports in the log are not ours
    finally:
        reader.close()


def test_the_peak_is_the_kernels_and_of_this_run(cgroup: Cgroup, tmp_path: Path) -> None:
    """A 40 MiB spike shorter than the sampling interval; an older 60 MiB peak before the run."""
    cgroup.set_memory_limit(256 * MIB)
    _hog(cgroup, 60).wait(30)
    assert cgroup.peak_usage() is not None and cgroup.peak_usage()[0] >= 60 * MIB  # type: ignore[index]
    recorder = Recorder(
        directory=tmp_path / "run",
        interval=5.0,
        targets=[{"type": "cgroup", "path": str(cgroup.path)}],
        configuration={"chaosmem_state_dir": str(tmp_path / "state")},
    )
    recorder.start()
    time.sleep(0.3)
    _hog(cgroup, 40).wait(30)  # allocates, touches and exits well within one interval
    time.sleep(0.3)
    records = recorder.stop()
    kernel = cgroup.peak_usage()
    assert kernel is not None
    series = build_series(records, records[0]["t"])
    [row] = series["targets"]
    sampled = max(p[1] for p in row["usage"])
    assert sampled < 20 * MIB  # the samples never saw the spike
    assert row["peak_sampled"] is False
    assert row["peak_from"] == "memory.max_usage_in_bytes (reset at run start)"
    assert abs(row["peak_usage"] - kernel[0]) <= 0.05 * kernel[0]
    assert 40 * MIB <= row["peak_usage"] < 60 * MIB  # this run's spike, not the older peak


def _svg_y_labels(svg: str) -> list[float]:
    axis = svg[svg.index('class="axis y') :]
    axis = axis[: axis.index("</g></g>") if "</g></g>" in axis else len(axis)]
    return [float(v.replace(",", "")) for v in re.findall(r">([\d,.]+) MiB<", axis)]


def _series(limit: float, usage: float, kill_usage: float | None) -> dict[str, Any]:
    records: list[dict[str, Any]] = [
        {
            "t": 100.0 + i,
            "kind": "sample",
            "targets": [{"name": "svc", "usage": usage, "limit": lim}],
        }
        for i, lim in enumerate([limit, limit, 64 * MIB, 64 * MIB])
    ]
    if kill_usage is not None:
        records.append(
            {"t": 102.5, "kind": "mark", "event": "oom-kill", "count": 1, "usage": kill_usage}
        )
    return build_series(sorted(records, key=lambda r: r["t"]), 100.0)


def test_memory_chart_shows_the_highest_limit_as_steps_and_the_kill_at_the_kernels_usage() -> None:
    series = _series(limit=1024 * MIB, usage=10 * MIB, kill_usage=64 * MIB)
    [row] = series["targets"]
    assert row["limit_before"] == 1024 * MIB and row["limit_min"] == 64 * MIB
    assert row["oom_kills"][0]["usage"] == 64 * MIB  # the kernel's, not the 10 MiB sample
    svg = memory_chart(series, time_span(series))
    assert svg is not None
    assert max(_svg_y_labels(svg)) >= 1024  # the y axis reaches the highest limit
    assert colour("limit") in svg and colour("usage") in svg and colour("oom") in svg


def test_one_colour_per_meaning_whatever_the_order() -> None:
    with_kill = memory_chart(_series(512 * MIB, 10 * MIB, 64 * MIB))
    without = memory_chart(_series(512 * MIB, 10 * MIB, None))
    assert with_kill is not None and without is not None
    for svg in (with_kill, without):
        styles = re.findall(r"\.color-(\d+)[^{]*\{[^}]*?(?:stroke|fill):\s*(#[0-9a-fA-F]{6})", svg)
        found = dict(styles)
        assert found["0"].lower() == colour("usage") and found["1"].lower() == colour("limit")
    assert re.search(r"\.color-2[^{]*\{[^}]*#111111", with_kill)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1.5e308])
def test_absurd_numbers_do_not_break_the_chart(value: float) -> None:
    series = _series(limit=value, usage=10 * MIB, kill_usage=value)
    assert memory_chart(series, time_span(series)) is not None


def test_v2_peak_is_memory_peak_where_the_kernel_has_it_else_sampled(
    v2_root: Path, tmp_path: Path
) -> None:
    """A v2 tree (this host's memory controller is v1): memory.peak is read, never reset; a
    kernel without memory.peak (before 5.19) gives a peak marked as sampled."""
    from tests.conftest import make_v2_group

    with_peak = make_v2_group(v2_root / "new", current=5 << 20)
    (with_peak / "memory.peak").write_text(f"{48 << 20}\n")
    without = make_v2_group(v2_root / "old", current=7 << 20)
    recorder = Recorder(
        directory=tmp_path / "run",
        interval=5.0,
        targets=[
            {"type": "cgroup", "path": str(with_peak)},
            {"type": "cgroup", "path": str(without)},
        ],
        configuration={"chaosmem_state_dir": str(tmp_path / "state")},
    )
    recorder.start()
    records = recorder.stop()
    assert (with_peak / "memory.peak").read_text() == f"{48 << 20}\n"  # not reset on v2
    rows = {r["name"]: r for r in build_series(records, records[0]["t"])["targets"]}
    assert rows["new"]["peak_usage"] == 48 << 20 and rows["new"]["peak_from"] == "memory.peak"
    assert rows["old"]["peak_sampled"] is True and rows["old"]["peak_usage"] == 7 << 20
