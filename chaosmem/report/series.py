"""Timeline records -> chart lines and headline figures, in seconds since the run started.

A report's memory must not grow with the run: a ten-day game day at 100 ms is ten million
samples. So nothing here holds the samples. The timeline is read twice, a record at a time:

1. the marks (OOM kills, activities), the stats record, Go's evidence captures, and each
   target's OOM-kill counter, so the times of the kills are known before any line is drawn;
2. every figure (peaks, limits, totals, the 503 ratio, lag) accumulated exactly over every
   sample, and every chart line fed into a :class:`Line` or :class:`Steps` that keeps a bounded
   number of points chosen so that what matters stays visible:

- a continuous line (usage, working set, stress, req/s, 503 ratio, Go memory, Prometheus)
  keeps, per time bucket, its lowest and highest point, plus its first and last point and the
  samples just before and just after each OOM kill: a peak near the limit and the usage at a
  kill survive exactly, unlike with averaging;
- a step line (limit, replicas) keeps exactly the first and last point of each run of one value,
  so a limit step is drawn where and at what it happened (past :data:`MAX_STEPS` points, a limit
  changing every sample, it falls back to buckets);
- OOM kills are never thinned: each one is drawn where it happened, at its usage.

Min/max buckets are a few dozen lines with no dependency, where an LTTB library would bring
numpy, and they keep the extremes LTTB may drop.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from chaosmem.report.journal import as_dict, as_list
from chaosmem.timeline.sources import target_label

__all__ = ["MAX_BUCKETS", "MAX_POINTS", "MAX_STEPS", "Line", "Steps", "build_series"]

Point = list[float]
#: Points per continuous chart line (plus its ends and its kills' samples); ~2 per horizontal
#: pixel of a 900-wide chart at most.
MAX_POINTS = 600
#: Time buckets a line holds while it is fed (each its lowest and highest point), merged in
#: pairs when there would be more; the line is drawn from at most :data:`MAX_POINTS` of them.
MAX_BUCKETS = 1024
#: Points a step line keeps exactly before it falls back to buckets.
MAX_STEPS = 2000
#: Marks kept for the method's table and the chart; more are counted, not listed.
MAX_MARKS = 2000
#: Lines a chart-only group (Go memstats, Prometheus queries) may have; more names are not drawn.
MAX_LINES = 64
#: Go's view of its memory, drawn on the memory chart beside the cgroup's (the source article's gap).
_GO_PREFERRED = ("HeapInuse", "HeapIdle", "HeapReleased", "Sys", "NextGC")
#: Buckets per second a line starts with (about a millisecond each; merged as the run goes on).
_START_SCALE = 1024.0


class Line:
    """One chart line, reduced as it is fed, in memory bounded by :data:`MAX_BUCKETS`.

    Time is cut into buckets of a power-of-two width; each keeps its lowest and highest point
    (the earliest, on a tie). When there would be more than ``buckets`` of them, the width
    doubles and neighbours merge (lowest of the two lows, highest of the two highs), so the
    extremes are never lost and the order points arrive in does not matter. ``kills`` are the
    times of OOM kills: the last point before each and the first at or after it are kept as they
    are, so the usage at a kill and its drop are drawn exactly.
    """

    __slots__ = ("after", "before", "buckets", "first", "kills", "last", "limit", "scale")

    def __init__(self, kills: list[float] | None = None, buckets: int = MAX_BUCKETS) -> None:
        self.limit = max(2, buckets)  # NB: times either side of 0 never share a bucket
        self.scale = _START_SCALE
        self.buckets: dict[int, list[float]] = {}  # bucket -> [low x, low y, high x, high y]
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] | None = None
        self.kills = kills or []
        self.before: dict[int, tuple[float, float]] = {}
        self.after: dict[int, tuple[float, float]] = {}

    def add(self, x: float, y: float) -> None:
        key = math.floor(x * self.scale)
        bucket = self.buckets.get(key)
        if bucket is None:
            self.buckets[key] = [x, y, x, y]
            if len(self.buckets) > self.limit:
                self._merge()
        else:
            if y < bucket[1] or (y == bucket[1] and x < bucket[0]):
                bucket[0] = x
                bucket[1] = y
            if y > bucket[3] or (y == bucket[3] and x < bucket[2]):
                bucket[2] = x
                bucket[3] = y
        if self.first is None or x < self.first[0]:
            self.first = (x, y)
        if self.last is None or x >= self.last[0]:
            self.last = (x, y)
        if self.kills:
            index = bisect_right(self.kills, x)  # kills[index - 1] <= x < kills[index]
            if index < len(self.kills):
                seen = self.before.get(index)
                if seen is None or x >= seen[0]:
                    self.before[index] = (x, y)
            if index:
                seen = self.after.get(index - 1)
                if seen is None or x < seen[0]:
                    self.after[index - 1] = (x, y)

    def _merge(self) -> None:
        while len(self.buckets) > self.limit:
            # NB: the scale is a power of two, so floor(x * scale / 2) == floor(x * scale) >> 1
            # exactly: a point lands in the same bucket as if the width had been this from the
            # start.
            self.scale /= 2
            merged: dict[int, list[float]] = {}
            for key, bucket in self.buckets.items():
                into = merged.get(key >> 1)
                if into is None:
                    merged[key >> 1] = bucket
                    continue
                if bucket[1] < into[1] or (bucket[1] == into[1] and bucket[0] < into[0]):
                    into[0], into[1] = bucket[0], bucket[1]
                if bucket[3] > into[3] or (bucket[3] == into[3] and bucket[2] < into[2]):
                    into[2], into[3] = bucket[2], bucket[3]
            self.buckets = merged

    def before_kill(self, x: float) -> tuple[float, float] | None:
        """The last point before the kill at ``x`` (one of ``kills``), if any."""
        index = bisect_left(self.kills, x)
        while index >= 0:  # NB: no sample since the kill before: the last one before that
            if (point := self.before.get(index)) is not None:
                return point
            index -= 1
        return None

    def __bool__(self) -> bool:
        return bool(self.buckets)

    def points(self, max_points: int = MAX_POINTS) -> list[Point]:
        """The line to draw: at most ``max_points`` bucket extremes (neighbouring buckets
        grouped when there are more), its first and last point and its kills' points, in time
        order."""
        keys = sorted(self.buckets)
        parts = min(max(1, max_points // 2), len(keys))
        kept: set[tuple[float, float]] = set()
        for index in range(parts):
            group = [
                self.buckets[k]
                for k in keys[index * len(keys) // parts : (index + 1) * len(keys) // parts]
            ]
            low = min(group, key=lambda b: (b[1], b[0]))
            high = min(group, key=lambda b: (-b[3], b[2]))
            kept.add((low[0], low[1]))
            kept.add((high[2], high[3]))
        for point in (self.first, self.last, *self.before.values(), *self.after.values()):
            if point is not None:
                kept.add(point)
        return [[x, y] for x, y in sorted(kept)]


def _step_append(points: list[Point], x: float, y: float) -> None:
    """Append to a step series keeping only the first and last point of each run of one value:
    a ten-hour limit line is a handful of points, not 36,000."""
    if len(points) >= 2 and points[-1][1] == y and points[-2][1] == y:
        points[-1] = [x, y]
    else:
        points.append([x, y])


class Steps:
    """A step line (a limit, replicas), kept exactly as the first and last point of each run of
    one value, and its figures: the first value, the lowest and the highest.

    A step line that changes more than :data:`MAX_STEPS` times is no limit a run sets; it is
    then kept as a :class:`Line` (its extremes still exact), so memory stays bounded."""

    __slots__ = ("exact", "first", "high", "line", "low")

    def __init__(self) -> None:
        self.exact: list[Point] | None = []
        self.line: Line | None = None
        self.first: float | None = None
        self.low = math.inf
        self.high = -math.inf

    def add(self, x: float, y: float) -> None:
        if self.first is None:
            self.first = y
        self.low = min(self.low, y)
        self.high = max(self.high, y)
        if self.exact is None:
            assert self.line is not None
            self.line.add(x, y)
            return
        _step_append(self.exact, x, y)
        if len(self.exact) > MAX_STEPS:
            self.line = Line()
            for point in self.exact:
                self.line.add(point[0], point[1])
            self.exact = None

    def points(self) -> list[Point]:
        if self.exact is not None:
            return self.exact
        assert self.line is not None
        return self.line.points()


def _number(value: Any) -> float | None:
    # NB: exact types: bool is an int, and this runs a dozen times per sample.
    kind = type(value)
    return float(value) if kind is int or kind is float else None


def _classes(status: Mapping[str, int]) -> dict[str, int]:
    """Answers by class: {"2xx": n, "4xx": n, "5xx": n, ...}, classes seen only."""
    classes: dict[str, int] = {}
    for code, count in sorted(status.items()):
        name = f"{code[0]}xx" if len(code) == 3 and code.isdigit() else "other"
        classes[name] = classes.get(name, 0) + count
    return classes


def _finite(value: Any) -> float | None:
    # NB: exact types and no call to math.isfinite: this runs a dozen times per sample.
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else None  # inf - inf and nan - nan are nan
    if kind is int:
        return float(value) if -_HUGE < value < _HUGE else None
    return None


_HUGE = 1 << 1000


def _count(value: Any) -> int:
    """A count from a journal: a non-negative whole number below 2**53, else 0."""
    kind = type(value)
    if (kind is int or kind is float) and 0 <= value < 9e15:
        return int(value)
    return 0


#: No memory size is larger (the kernel's own "no limit" is just under it); a bigger number in a
#: journal is not a size, and is left out rather than drawn (or formatted) as one.
MAX_BYTES = float(1 << 63)
#: Ten years in seconds: a record further from the run's start is not of this run.
MAX_SPAN = 3.2e8


def _bytes(value: Any) -> float | None:
    number = _finite(value)
    return number if number is not None and 0 <= number <= MAX_BYTES else None


def _kill(mark: Mapping[str, Any]) -> dict[str, Any]:
    """An OOM-kill mark as the chart and tables show it: where, at what usage, who died."""
    kill: dict[str, Any] = {"x": mark["x"], "counter": _number(mark.get("count"))}
    if (usage := _bytes(mark.get("usage"))) is not None:
        kill["usage"] = usage
        kill["usage_from"] = str(mark.get("source") or "the kernel")
    if (limit := _bytes(mark.get("limit"))) is not None:
        kill["limit"] = limit
    if type(mark.get("victim_pid")) is int:
        kill["victim_pid"] = mark["victim_pid"]
    if isinstance(mark.get("victim_command"), str):
        kill["victim_command"] = mark["victim_command"][:64]
    stat = mark.get("stat")
    if isinstance(stat, Mapping):
        kill["stat"] = {
            str(k)[:32]: v for k, v in list(stat.items())[:16] if _finite(v) is not None
        }
    return kill


def _mark_targets(mark: Mapping[str, Any]) -> set[str]:
    """The names an OOM-kill mark may go by: its target's label (the control's marks carry the
    target spec), else, for older journals, its cgroup's path or directory."""
    target = mark.get("target")
    if target:
        return {target_label(target) if isinstance(target, Mapping) else str(target)}
    if isinstance(mark.get("cgroup"), str):
        return {mark["cgroup"], mark["cgroup"].rstrip("/").rsplit("/", 1)[-1]}
    return set()


def _replicas(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if (number := _number(value)) is not None:
        return {"replicas": number}
    if isinstance(value, dict):
        return {str(k): n for k, v in value.items() if (n := _number(v)) is not None}
    return {}


def _records(
    timeline: Iterable[Mapping[str, Any]], zero: float
) -> Iterable[tuple[float, Any, Mapping[str, Any]]]:
    """(seconds since the run started, kind, record) of every record with a usable time."""
    for record in timeline:
        t = _finite(record.get("t"))
        if t is None:
            continue
        x = round(t - zero, 3)
        if abs(x) > MAX_SPAN:  # NB: not a time of this run: a chart axis cannot hold it
            continue
        yield x, record.get("kind"), record


class _Counter:
    """A target's OOM-kill counter: its first and last value and where it went up."""

    __slots__ = ("first", "last", "rises")

    def __init__(self, value: float) -> None:
        self.first = value
        self.last = value
        self.rises: list[dict[str, Any]] = []

    def add(self, x: float, value: float) -> None:
        if value > self.last and len(self.rises) < MAX_MARKS:
            self.rises.append({"x": x, "count": int(value - self.last)})
        self.last = value


def _first_pass(timeline: Iterable[Mapping[str, Any]], zero: float) -> dict[str, Any]:
    """What must be known before any line is drawn: the marks (the OOM kills' times), each
    target's OOM-kill counter, the stats record, Go's evidence captures."""
    marks: list[dict[str, Any]] = []
    kills_by: Counter[frozenset[str]] = Counter()  # every oom-kill mark, by the names it goes by
    left_out = 0
    counters: dict[str, _Counter] = {}
    stats: dict[str, Any] | None = None
    evidence: list[Any] = []
    for x, kind, record in _records(timeline, zero):
        if kind == "mark":
            # NB: an OOM watcher's mark carries the kernel event's own time in ``at``.
            seen_at = _finite(record.get("at")) if record.get("event") == "oom-kill" else None
            if seen_at is not None and abs(seen_at - zero) > MAX_SPAN:
                seen_at = None
            mark = {**record, "x": round(seen_at - zero, 3) if seen_at is not None else x}
            if mark.get("event") == "oom-kill":
                kills_by[frozenset(_mark_targets(mark))] += 1
            if len(marks) < MAX_MARKS:
                marks.append(mark)
            else:
                left_out += 1
        elif kind == "stats":
            stats = dict(record)
        elif kind == "sample":
            for row in as_list(record.get("targets")):
                if type(row) is dict and (killed := _finite(row.get("oom_kills"))) is not None:
                    name = str(row.get("name", "?"))
                    counter = counters.get(name)
                    if counter is None and row.get("oom_kills_of") == "run":
                        # NB: the run's own count starts at 0: a kill before the first sample (a
                        # service killed before the control looked) is a rise too.
                        counter = counters[name] = _Counter(0.0)
                    if counter is None:
                        counters[name] = _Counter(killed)
                    else:
                        counter.add(x, killed)
            go = record.get("go")
            if type(go) is dict and isinstance(go.get("evidence"), list):
                evidence += [
                    item for item in go["evidence"][:MAX_MARKS] if isinstance(item, Mapping)
                ][: MAX_MARKS - len(evidence)]
    return {
        "marks": marks,
        "kills_by": kills_by,
        "left_out": left_out,
        "counters": counters,
        "stats": stats,
        "evidence": evidence,
    }


class _Target:
    """Everything kept of one target while the samples stream by."""

    __slots__ = ("errors", "limit", "peak", "peak_from", "sampled_peak", "usage", "working_set")

    def __init__(self, kills: list[float]) -> None:
        self.usage = Line(kills)
        self.working_set = Line()
        self.limit = Steps()
        self.errors = 0
        self.peak: float | None = None
        self.peak_from = "the kernel"
        self.sampled_peak: float | None = None


def build_series(timeline: Iterable[Mapping[str, Any]], zero: float) -> dict[str, Any]:
    """Chart lines (bounded, see :class:`Line`) and figures (exact, over every sample) from the
    records. ``timeline`` is read twice (a list, or a journal's streamed
    :class:`~chaosmem.report.journal.Timeline`)."""
    known = _first_pass(timeline, zero)
    marks: list[dict[str, Any]] = known["marks"]
    oom_marks = [m for m in marks if m.get("event") == "oom-kill"]
    counters: dict[str, _Counter] = known["counters"]
    kill_times = sorted(
        {float(m["x"]) for m in oom_marks}
        | {float(r["x"]) for c in counters.values() for r in c.rises}
    )
    targets: dict[str, _Target] = {}
    stress = Line()
    stress_peak: float | None = None
    rps = Line()
    rps_count = 0
    rps_sum = 0.0
    rps_peak: float | None = None
    class_rps: dict[str, Line] = {}
    ratio = Line()
    replicas: dict[str, Steps] = {}
    go: dict[str, Line] = {}
    prometheus: dict[str, Line] = {}
    totals: dict[str, Any] = {"sent": 0, "completed": 0, "status": {}, "errors": {}}
    lag_p99: float | None = None
    samples = 0

    for x, kind, record in _records(timeline, zero):
        if kind != "sample":
            continue
        samples += 1
        for row in as_list(record.get("targets")):
            if type(row) is not dict:
                continue
            name = str(row.get("name", "?"))
            entry = targets.get(name)
            if entry is None:
                entry = targets[name] = _Target(kill_times)
            if "error" in row:
                entry.errors += 1
            if (usage := _bytes(row.get("usage"))) is not None:
                entry.usage.add(x, usage)
                if entry.sampled_peak is None or usage > entry.sampled_peak:
                    entry.sampled_peak = usage
            if (working := _bytes(row.get("working_set"))) is not None:
                entry.working_set.add(x, working)
            if (limit := _bytes(row.get("limit"))) is not None:
                entry.limit.add(x, limit)
            if (peak := _bytes(row.get("peak"))) is not None and (
                entry.peak is None or peak > entry.peak
            ):
                entry.peak = peak
                entry.peak_from = str(row.get("peak_from") or "the kernel")
        held = record.get("stress")
        if type(held) is dict and (value := _bytes(held.get("bytes"))) is not None:
            stress.add(x, value)
            if stress_peak is None or value > stress_peak:
                stress_peak = value
        traffic = record.get("traffic")
        if type(traffic) is dict and (seconds := _finite(traffic.get("seconds"))) and seconds > 0:
            completed = float(_count(traffic.get("completed")))
            rate = completed / seconds
            rps.add(x, rate)
            rps_count += 1
            rps_sum += rate
            if rps_peak is None or rate > rps_peak:
                rps_peak = rate
            status = as_dict(traffic.get("status"))
            answered = sum(_count(n) for n in status.values())
            per_class = _classes({str(k): _count(n) for k, n in status.items()})
            failed = sum(_count(n) for n in as_dict(traffic.get("errors")).values())
            if failed:
                per_class["no answer"] = failed
            for name in per_class:
                if name not in class_rps:
                    class_rps[name] = Line()
            for name, line in class_rps.items():
                line.add(x, per_class.get(name, 0) / seconds)
            if answered:
                ratio.add(x, _count(status.get("503", 0)) / answered)
            totals["sent"] += _count(traffic.get("sent"))
            totals["completed"] += int(completed)
            for name in ("status", "errors"):
                bucket = traffic.get(name)
                if isinstance(bucket, Mapping):
                    for code, count in bucket.items():
                        totals[name][str(code)] = totals[name].get(str(code), 0) + _count(count)
            if (lag := _number(traffic.get("lag_p99_ms"))) is not None and (
                lag_p99 is None or lag > lag_p99
            ):
                lag_p99 = lag
        for name, value in _replicas(record.get("replicas")).items():
            steps = replicas.get(name)
            if steps is None:
                steps = replicas[name] = Steps()
            steps.add(x, value)
        queried = record.get("prometheus")
        if type(queried) is dict:
            for name, raw in queried.items():
                if (value := _finite(raw)) is not None:
                    _line(prometheus, str(name)).add(x, value)
        memstats = record.get("go")
        if type(memstats) is dict:
            for name, raw in memstats.items():
                if (value := _number(raw)) is not None:
                    _line(go, str(name)).add(x, value)

    kills_by: Counter[frozenset[str]] = known["kills_by"]
    target_rows: list[dict[str, Any]] = []
    for name, entry in targets.items():
        counter = counters.get(name)
        derived = [dict(r) for r in counter.rises] if counter else []

        def matches(names: Iterable[str], name: str = name) -> bool:
            names = set(names)
            return len(targets) == 1 or name in names or not names

        exact = [_kill(m) for m in oom_marks if matches(_mark_targets(m))]
        exact_total = sum(n for names, n in kills_by.items() if matches(names))
        kills = exact or derived
        for kill in kills:
            if kill.get("usage") is None:
                # NB: without the kernel's report, the usage just before the kill: the sample
                # after it shows the drop.
                before = entry.usage.before_kill(float(kill["x"]))
                kill["usage"] = before[1] if before else None
                kill["usage_from"] = "the last sample before the kill"
        kernel_peak = entry.peak
        sampled_peak = entry.sampled_peak
        limits = entry.limit
        target_rows.append(
            {
                "name": name,
                "usage": entry.usage.points(),
                "limit": limits.points(),
                "working_set": entry.working_set.points(),
                "oom_kills": kills,
                "oom_kill_total": max(
                    int(counter.last - counter.first) if counter else 0, exact_total
                ),
                "peak_usage": kernel_peak if kernel_peak is not None else sampled_peak,
                "peak_from": entry.peak_from
                if kernel_peak is not None
                else ("samples" if sampled_peak is not None else None),
                "peak_sampled": kernel_peak is None,
                "limit_before": limits.first,
                "limit_min": limits.low if limits.first is not None else None,
                "limit_max": limits.high if limits.first is not None else None,
                "unreadable_samples": entry.errors,
            }
        )
    answered_total = sum(totals["status"].values())
    traffic_summary = None
    if rps_count:
        traffic_summary = {
            **totals,
            "peak_rps": rps_peak,
            "mean_rps": rps_sum / rps_count,
            "classes": _classes(totals["status"]),
            "ratio_503": totals["status"].get("503", 0) / answered_total
            if answered_total
            else None,
            "lag_p99_ms": lag_p99,
        }
    go_keys = [k for k in _GO_PREFERRED if k in go] or sorted(go)[:6]
    return {
        "samples": samples,
        "targets": target_rows,
        "stress": stress.points(),
        "stress_peak": stress_peak,
        "rps": rps.points(),
        "class_rps": {k: v.points() for k, v in sorted(class_rps.items())},
        "ratio_503": ratio.points(),
        "traffic": traffic_summary,
        "replicas": {k: v.points() for k, v in replicas.items()},
        "replicas_range": {k: [v.low, v.high] for k, v in replicas.items()},
        "go": {k: go[k].points() for k in go_keys},
        "prometheus": {k: v.points() for k, v in prometheus.items()},
        "marks": marks,
        "marks_left_out": known["left_out"],
        "stats": known["stats"],
        "evidence": known["evidence"],
    }


def _line(group: dict[str, Line], name: str) -> Line:
    """The line ``name`` of a chart-only group; past :data:`MAX_LINES` names, one not drawn."""
    line = group.get(name)
    if line is None:
        line = Line() if len(group) < MAX_LINES else _NOWHERE
        if line is not _NOWHERE:
            group[name] = line
    return line


class _Nowhere(Line):
    def add(self, x: float, y: float) -> None:
        return None


_NOWHERE = _Nowhere()
