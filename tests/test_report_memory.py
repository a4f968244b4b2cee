"""A long run's report: bounded chart lines that keep what matters, exact figures, streamed reading.

The reduction (:class:`chaosmem.report.series.Line`) is checked against random series: the exact
lowest and highest point, the ends and the samples around each OOM kill always survive, whatever
order the points come in. A report of a long journal (written the way ``chaos run`` writes one,
by ``bench/report_render.py``) draws a bounded number of points, and its figures equal those
computed here from every record of the file.
"""

from __future__ import annotations

import importlib.util
import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.report import build_report, render
from chaosmem.report import journal as journal_module
from chaosmem.report import series as series_module
from chaosmem.report.journal import load_journal
from chaosmem.report.series import MAX_POINTS, MAX_STEPS, Line, Steps, build_series

_SPEC = importlib.util.spec_from_file_location(
    "report_render", Path(__file__).resolve().parent.parent / "bench" / "report_render.py"
)
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)

MIB = 1 << 20

xs = st.lists(
    st.floats(min_value=-1e5, max_value=3e8, allow_nan=False),
    min_size=1,
    max_size=3000,
    unique=True,
)


@st.composite
def series_and_kills(draw: st.DrawFn) -> tuple[list[tuple[float, float]], list[float]]:
    times = draw(xs)
    values = draw(
        st.lists(
            st.floats(min_value=0, max_value=2**63, allow_nan=False)
            | st.integers(0, 50).map(float),  # NB: many ties, as a limit or a count has
            min_size=len(times),
            max_size=len(times),
        )
    )
    kills = draw(st.lists(st.sampled_from(times) | st.floats(-1e5, 3e8), max_size=12))
    return list(zip(times, values, strict=True)), sorted(set(kills))


def _reduce(points: list[tuple[float, float]], kills: list[float], **kw: Any) -> Line:
    line = Line(kills, **kw)
    for x, y in points:
        line.add(x, y)
    return line


@settings(max_examples=200, deadline=None)
@given(case=series_and_kills(), buckets=st.integers(2, 64), rng=st.randoms(use_true_random=False))
def test_a_reduced_line_keeps_the_extremes_ends_and_kills(
    case: tuple[list[tuple[float, float]], list[float]], buckets: int, rng: random.Random
) -> None:
    points, kills = case
    line = _reduce(points, kills, buckets=buckets)
    kept = [tuple(p) for p in line.points()]
    # bounded: bucket extremes, the two ends, and the two samples around each kill
    assert len(kept) <= MAX_POINTS + 2 + 2 * len(kills)
    assert len(kept) <= 2 * buckets + 2 + 2 * len(kills)
    # nothing invented, in time order
    assert set(kept) <= set(points)
    assert kept == sorted(kept)
    # the exact extremes (the earliest, on a tie) and both ends
    top = max(y for _x, y in points)
    low = min(y for _x, y in points)
    assert (min(x for x, y in points if y == top), top) in kept
    assert (min(x for x, y in points if y == low), low) in kept
    assert min(points) in kept and max(points) in kept
    # around every kill: the last sample before it (the usage at the kill) and the first after
    for kill in kills:
        before = [p for p in points if p[0] < kill]
        after = [p for p in points if p[0] >= kill]
        if before:
            assert max(before) in kept
            assert line.before_kill(kill) == max(before)
        else:
            assert line.before_kill(kill) is None
        if after:
            assert min(after) in kept
    # the order the samples come in changes nothing
    shuffled = list(points)
    rng.shuffle(shuffled)
    assert _reduce(shuffled, kills, buckets=buckets).points() == line.points()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=400))
def test_a_step_line_keeps_every_change_where_it_happened(values: list[int]) -> None:
    steps = Steps()
    for x, value in enumerate(values):
        steps.add(float(x), float(value))
    kept = steps.points()
    # the first and last point of each run of one value: every change, exactly where it was
    expected: list[list[float]] = []
    for x, value in enumerate(values):
        if x == 0 or value != values[x - 1]:
            if x and expected[-1] != [float(x - 1), float(values[x - 1])]:
                expected.append([float(x - 1), float(values[x - 1])])
            expected.append([float(x), float(value)])
    if expected[-1] != [float(len(values) - 1), float(values[-1])]:
        expected.append([float(len(values) - 1), float(values[-1])])
    assert kept == expected
    assert (steps.first, steps.low, steps.high) == (values[0], min(values), max(values))


def test_a_step_line_that_never_settles_is_bounded_and_keeps_its_extremes() -> None:
    steps = Steps()
    rng = random.Random(3)
    values = [float(rng.randrange(1000)) for _ in range(5 * MAX_STEPS)]
    values[7777] = 5000.0
    for x, value in enumerate(values):
        steps.add(float(x), value)
    kept = steps.points()
    assert len(kept) <= MAX_POINTS + 2
    assert [7777.0, 5000.0] in kept
    assert (steps.low, steps.high) == (min(values), max(values))


def _write(path: Path, samples: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        bench.write_journal(out, samples)
    return path


def _full_figures(path: Path) -> dict[str, Any]:
    """The figures, computed here from every record of the file (json.load, no reduction)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    timeline = data["extensions"][0]["timeline"]
    samples = [r for r in timeline if r["kind"] == "sample"]
    kills = [r for r in timeline if r.get("event") == "oom-kill"]
    rows = [r["targets"][0] for r in samples]
    usage = [(r["t"], row["usage"]) for r, row in zip(samples, rows, strict=True)]
    status: dict[str, int] = {}
    for r in samples:
        for code, n in r["traffic"]["status"].items():
            status[code] = status.get(code, 0) + n
    rates = [r["traffic"]["completed"] / r["traffic"]["seconds"] for r in samples]
    return {
        "samples": len(samples),
        "peak": max(row["peak"] for row in rows),
        "sampled_max": max(usage, key=lambda p: (p[1], -p[0])),
        "limits": [rows[0]["limit"], min(r["limit"] for r in rows), max(r["limit"] for r in rows)],
        "kills": [(k["at"], k["usage"]) for k in kills],
        "kill_total": rows[-1]["oom_kills"] - rows[0]["oom_kills"],
        "stress_peak": max(r["stress"]["bytes"] for r in samples),
        "sent": sum(r["traffic"]["sent"] for r in samples),
        "completed": sum(r["traffic"]["completed"] for r in samples),
        "status": status,
        "ratio_503": status["503"] / sum(status.values()),
        "peak_rps": max(rates),
        "mean_rps": statistics.fmean(rates),
        "lag": max(r["traffic"]["lag_p99_ms"] for r in samples),
        "replicas": {
            name: [
                min(r["replicas"][name] for r in samples),
                max(r["replicas"][name] for r in samples),
            ]
            for name in ("desired", "ready")
        },
        "zero": bench.START,
    }


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    directory = tmp_path_factory.mktemp("long")
    return {n: _write(directory / f"journal-{n}.json", n) for n in (3_000, 30_000)}


def test_a_long_journals_report_draws_a_bounded_number_of_points(
    journals: dict[int, Path],
) -> None:
    drawn = {}
    for samples, path in journals.items():
        html = render(build_report([path]), "html")
        drawn[samples] = bench.chart_points(html)
        assert len(drawn[samples]) == 4  # memory, traffic, 503 ratio, replicas
    short, long = drawn[3_000], drawn[30_000]
    # ten times the samples, the same few thousand points per chart at most
    assert max(long) <= 5_000, long
    assert sum(long) <= 1.2 * sum(short), (short, long)
    # memory: usage, stress and 3 Go lines of at most MAX_POINTS, plus ends, kills and steps
    assert long[0] <= 5 * (MAX_POINTS + 2 + 2 * (30_000 // bench.KILL_EVERY)) + 50


def test_a_long_journals_figures_are_those_of_every_sample(journals: dict[int, Path]) -> None:
    path = journals[30_000]
    full = _full_figures(path)
    report = build_report([path])
    [e] = report["experiments"]
    series = e["timeline"]
    [target] = series["targets"]
    zero = full["zero"]
    assert series["samples"] == full["samples"]
    assert target["peak_usage"] == full["peak"] and not target["peak_sampled"]
    assert [target["limit_before"], target["limit_min"], target["limit_max"]] == full["limits"]
    assert target["oom_kill_total"] == full["kill_total"] == len(full["kills"])
    assert [(k["x"], k["usage"]) for k in target["oom_kills"]] == [
        (round(at - zero, 3), usage) for at, usage in full["kills"]
    ]
    assert series["stress_peak"] == full["stress_peak"]
    traffic = series["traffic"]
    assert (traffic["sent"], traffic["completed"], traffic["status"]) == (
        full["sent"],
        full["completed"],
        full["status"],
    )
    assert traffic["ratio_503"] == full["ratio_503"]
    assert traffic["peak_rps"] == full["peak_rps"]
    assert traffic["mean_rps"] == pytest.approx(full["mean_rps"], rel=1e-12)
    assert traffic["lag_p99_ms"] == full["lag"]
    assert series["replicas_range"] == full["replicas"]
    assert e["figures"]["oom_kills"] == full["kill_total"]
    assert e["figures"]["ratio_503"] == full["ratio_503"]
    # the usage line holds the highest sample exactly, and the limit line each of its steps
    t, top = full["sampled_max"]
    assert [round(t - zero, 3), float(top)] in target["usage"]
    assert [limit for _x, limit in target["limit"]] == [
        1024 * MIB,
        1024 * MIB,
        512 * MIB,
        512 * MIB,
    ]
    # and the report says so: the figures in the HTML and Markdown are these
    for fmt in ("html", "markdown"):
        text = render(report, fmt)
        assert f"{full['kill_total']}" in text
        assert f"{full['ratio_503'] * 100:.2f}%" in text


def test_the_usage_at_a_kill_without_the_kernels_report_is_the_last_sample_before_it() -> None:
    records: list[dict[str, Any]] = []
    for i in range(20_000):
        usage = 100 + (i % 97) + (900 if i == 12_345 else 0)
        records.append(
            {"t": 1000.0 + i, "kind": "sample", "targets": [{"name": "s", "usage": usage}]}
        )
    # the watcher marks the kill late (at +3 s), with the kernel's time in "at" and no usage
    records.insert(
        12_349,
        {"t": 1000.0 + 12_348.5, "kind": "mark", "event": "oom-kill", "at": 1000.0 + 12_345.5},
    )
    series = build_series(records, 1000.0)
    [row] = series["targets"]
    [kill] = row["oom_kills"]
    assert kill["x"] == 12_345.5
    assert kill["usage"] == 100 + (12_345 % 97) + 900
    assert kill["usage_from"] == "the last sample before the kill"
    assert [12_345.0, kill["usage"]] in row["usage"] and [12_346.0, 100 + 12_346 % 97] in row[
        "usage"
    ]
    assert len(row["usage"]) <= MAX_POINTS + 4


def test_marks_past_the_cap_are_counted_not_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(series_module, "MAX_MARKS", 5)
    path = _write(tmp_path / "j.json", 9 * bench.KILL_EVERY + 10)
    [e] = build_report([path])["experiments"]
    [target] = e["timeline"]["targets"]
    assert target["oom_kill_total"] == 9 and len(target["oom_kills"]) == 5
    assert e["figures"]["oom_kills"] == 9
    assert any("4 more marks" in row["name"] for row in e["method"])


@st.composite
def journal_texts(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(10**30), 10**30)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
    )
    values = st.recursive(
        scalars,
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
        ),
        max_leaves=12,
    )
    record = st.fixed_dictionaries(
        {"t": st.floats(0, 2e9), "kind": st.sampled_from(["sample", "mark"])},
        optional={"v": values, "s": st.text(max_size=20)},
    )
    journal = {
        "experiment": draw(st.dictionaries(st.text(max_size=6), values, max_size=3)),
        "status": draw(st.text(max_size=8)),
        "run": draw(values),
        "extensions": [
            {"name": "chaosmem", "timeline": draw(st.lists(record, max_size=25)), "x": draw(values)}
        ],
        "after": draw(values),
    }
    text = json.dumps(
        journal, indent=draw(st.sampled_from([None, 2])), ensure_ascii=draw(st.booleans())
    )
    return journal, text


@settings(max_examples=200, deadline=None)
@given(case=journal_texts(), chunk=st.integers(1, 64))
def test_the_streamed_reader_reads_what_json_reads_whatever_the_chunks(
    case: tuple[dict[str, Any], str], chunk: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _journal, text = case
    path = tmp_path_factory.mktemp("stream") / "journal.json"
    path.write_text(text, encoding="utf-8")
    old = journal_module.CHUNK
    journal_module.CHUNK = chunk  # NB: tiny chunks cut every token somewhere
    try:
        loaded = load_journal(path)
        timeline = loaded["extensions"][0]["timeline"]
        records = list(timeline)
        assert records == list(timeline)  # read again from the file, the same
    finally:
        journal_module.CHUNK = old
    expected = json.loads(text)
    assert records == expected["extensions"][0]["timeline"] and len(timeline) == len(records)
    loaded["extensions"][0]["timeline"] = records
    assert loaded == expected


@pytest.mark.parametrize("cut", [1, 2, 10, 100])
def test_a_truncated_journal_is_refused(
    tmp_path: Path, cut: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "CHUNK", 16)
    path = _write(tmp_path / "j.json", 50)
    path.write_bytes(path.read_bytes()[:-cut])
    from chaosmem.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="not JSON"):
        load_journal(path)
