"""Journals are read, never trusted: no journal crashes the report or fools the gate.

Hypothesis puts arbitrary JSON (wrong types, null, huge and non-finite numbers, deep nesting)
where a journal has its parts; every report format still renders or the command fails with a
clear error naming the journal, and the gate passes only the untouched, real-shaped journal.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chaosmem.cli import main
from chaosmem.errors import InvalidArgument
from chaosmem.report import build_report, judge, render
from chaosmem.report.journal import load_journal

T0 = 1_790_000_000.0
ISO = "2026-09-21T12:00:00+00:00"


def base() -> dict[str, Any]:
    probe = {
        "type": "probe",
        "name": "up",
        "tolerance": True,
        "provider": {
            "type": "python",
            "module": "os.path",
            "func": "exists",
            "arguments": {"path": "/"},
        },
    }
    run = {
        "activity": probe,
        "output": True,
        "status": "succeeded",
        "start": ISO,
        "end": ISO,
        "duration": 0.1,
        "tolerance_met": True,
    }
    state = {"steady_state_met": True, "probes": [run]}
    timeline: list[dict[str, Any]] = [
        {
            "t": T0 + i,
            "kind": "sample",
            "targets": [
                {
                    "name": "svc",
                    "usage": 10 << 20,
                    "limit": 64 << 20,
                    "oom_kills": i // 3,
                    "peak": 20 << 20,
                    "peak_from": "memory.max_usage_in_bytes",
                }
            ],
            "stress": {"bytes": 1 << 20, "stressors": 1},
            "traffic": {
                "seconds": 1,
                "sent": 10,
                "completed": 9,
                "status": {"200": 8, "503": 1},
                "errors": {"timeout": 1},
                "lag_p99_ms": 1.0,
            },
        }
        for i in range(6)
    ]
    timeline.insert(
        3,
        {
            "t": T0 + 2.5,
            "kind": "mark",
            "event": "oom-kill",
            "count": 1,
            "usage": 64 << 20,
            "victim_pid": 42,
            "victim_command": "python",
            "stat": {"anon": 60 << 20, "file": 0},
        },
    )
    return {
        "chaoslib-version": "1.44.0",
        "platform": "Linux",
        "node": "n",
        "experiment": {
            "title": "t",
            "description": "d",
            "steady-state-hypothesis": {"title": "h", "probes": [probe]},
            "method": [probe],
        },
        "start": ISO,
        "end": ISO,
        "duration": 6.0,
        "status": "completed",
        "deviated": False,
        "steady_states": {"before": state, "after": state, "during": []},
        "run": [run],
        "rollbacks": [],
        "extensions": [{"name": "chaosmem", "run": "r1", "timeline": timeline, "restored": []}],
    }


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1.5e308, -1.5e308, 10**400, 2**63, -1])
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

#: Paths into the journal where a value is replaced.
PLACES = [
    ("status",),
    ("deviated",),
    ("run",),
    ("rollbacks",),
    ("extensions",),
    ("experiment",),
    ("steady_states",),
    ("steady_states", "before"),
    ("steady_states", "after"),
    ("steady_states", "during"),
    ("run", 0),
    ("run", 0, "output"),
    ("run", 0, "activity"),
    ("start",),
    ("duration",),
    ("extensions", 0),
    ("extensions", 0, "timeline"),
    ("extensions", 0, "restored"),
    ("extensions", 0, "timeline", 0),
    ("extensions", 0, "timeline", 0, "t"),
    ("extensions", 0, "timeline", 1, "targets"),
    ("extensions", 0, "timeline", 1, "targets", 0, "limit"),
    ("extensions", 0, "timeline", 1, "targets", 0, "usage"),
    ("extensions", 0, "timeline", 1, "targets", 0, "peak"),
    ("extensions", 0, "timeline", 2, "traffic"),
    ("extensions", 0, "timeline", 2, "traffic", "status"),
    ("extensions", 0, "timeline", 2, "traffic", "seconds"),
    ("extensions", 0, "timeline", 3),
    ("extensions", 0, "timeline", 3, "usage"),
    ("extensions", 0, "timeline", 3, "stat"),
    ("extensions", 0, "timeline", 3, "at"),
    ("experiment", "steady-state-hypothesis"),
    ("experiment", "title"),
]


def _put(journal: dict[str, Any], place: tuple[Any, ...], value: Any) -> None:
    node: Any = journal
    for key in place[:-1]:
        node = node[key]
    node[place[-1]] = value


def _render_all(path: Path) -> str:
    report = build_report([path])
    for fmt in ("html", "markdown", "json", "junit"):
        render(report, fmt)
    return str(report["experiments"][0]["verdict"]["status"])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(place=st.sampled_from(PLACES), value=JSON)
# found by this test: an integer too large for a float in an OOM kill's memory.stat
@example(place=("extensions", 0, "timeline", 3, "stat"), value={"anon": 10**400})
def test_no_value_anywhere_crashes_the_report_or_passes_the_gate(
    tmp_path: Path, place: tuple[Any, ...], value: Any
) -> None:
    journal = base()
    original = copy.deepcopy(journal)
    _put(journal, place, value)
    path = tmp_path / "j.json"
    path.write_text(json.dumps(journal))
    try:
        status = _render_all(path)
    except InvalidArgument as exc:
        assert "JOURNAL" in str(exc)
        return
    if status == "passed":
        # only what Chaos Toolkit writes for a completed run with a met check may still pass
        assert journal["status"] == "completed" and journal["deviated"] is False
        states = journal["steady_states"]
        assert isinstance(states, dict)
        met = [states.get(p) for p in ("before", "after")]
        assert any(isinstance(m, dict) and m.get("steady_state_met") is True for m in met)
        assert not any(isinstance(m, dict) and m.get("steady_state_met") is not True for m in met)
        assert original["experiment"]["title"] == "t"


@pytest.mark.parametrize(
    ("place", "value"),
    [
        (("extensions",), 5),
        (("run",), 5),
        (("extensions", 0, "timeline", 0, "t"), None),
        (("extensions", 0, "timeline", 1, "targets", 0, "limit"), 1.5e308),
        (("extensions", 0, "timeline", 3, "usage"), float("inf")),
    ],
)
def test_the_named_cases_render(tmp_path: Path, place: tuple[Any, ...], value: Any) -> None:
    journal = base()
    _put(journal, place, value)
    path = tmp_path / "j.json"
    path.write_text(json.dumps(journal))
    _render_all(path)


def test_a_real_shaped_journal_passes_and_forgeries_do_not(tmp_path: Path) -> None:
    assert judge(base()).status == "passed"
    for status in ("weird", "Completed", ""):
        assert judge({**base(), "status": status}).status == "failed"
    assert judge({"experiment": {}, "status": "completed"}).status == "failed"


def test_deep_nesting_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.json"
    journal = json.dumps(base())
    path.write_text(journal[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InvalidArgument, match="nest"):
        load_journal(path)
    assert main(["gate", str(path)]) == 2
    assert "nest" in capsys.readouterr().err


def test_a_long_timeline_is_read_record_by_record(tmp_path: Path) -> None:
    """The timeline stays text until read: loading costs about the file's size, not the ~8x of
    decoding every record into Python objects at once."""
    import tracemalloc

    from chaosmem.report.journal import Timeline

    journal = base()
    sample = journal["extensions"][0]["timeline"][0]
    journal["extensions"][0]["timeline"] = [{**sample, "t": T0 + i} for i in range(15_000)]
    path = tmp_path / "long.json"
    path.write_text(json.dumps(journal))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        loaded = load_journal(path)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    timeline = loaded["extensions"][0]["timeline"]
    assert isinstance(timeline, Timeline) and len(timeline) == 15_000
    assert peak < 3 * size, (peak, size)
    tracemalloc.start()
    try:
        json.loads(path.read_text())
        _current, whole = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert whole > 2 * peak  # what decoding it all at once would have cost
    report = build_report([path])
    [target] = report["experiments"][0]["timeline"]["targets"]
    assert report["experiments"][0]["timeline"]["samples"] == 15_000
    assert target["peak_usage"] == 20 << 20
