"""Timeline records -> chart series and headline figures, in seconds since the run started.

Figures (peaks, totals, OOM kills, the 503 ratio) are computed from every sample; only the chart
series are thinned, and only after that, so a report of a ten-hour game day stays small without
hiding the one spike that matters:

- continuous series (usage, stress, req/s, 503 ratio, Go memory) keep the minimum and maximum of
  each bucket, in time order — a peak near the limit survives, unlike with averaging;
- step series (limit, replicas) keep only the points where the value changes;
- OOM kills are never thinned: each one is drawn where it happened.

Min/max buckets are a dozen lines with no dependency, where an LTTB library would bring numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chaosmem.report.journal import as_dict, as_list
from chaosmem.timeline.sources import target_label

__all__ = ["MAX_POINTS", "build_series", "minmax", "steps", "thin"]

Point = list[float]
#: Points per continuous chart line; ~2 per horizontal pixel of a 900-wide chart at most.
MAX_POINTS = 600
#: Go's view of its memory, drawn on the memory chart beside the cgroup's (the source article's gap).
_GO_PREFERRED = ("HeapInuse", "HeapIdle", "HeapReleased", "Sys", "NextGC")


def minmax(points: list[Point], max_points: int = MAX_POINTS) -> list[Point]:
    """At most ``max_points`` points keeping each bucket's extremes, in time order."""
    if len(points) <= max_points:
        return points
    buckets = max(1, max_points // 2)
    size = len(points) / buckets
    kept: list[Point] = []
    for index in range(buckets):
        bucket = points[int(index * size) : int((index + 1) * size)]
        if not bucket:
            continue
        low = min(bucket, key=lambda p: p[1])
        high = max(bucket, key=lambda p: p[1])
        kept.extend(sorted({id(low): low, id(high): high}.values(), key=lambda p: p[0]))
    return kept


def steps(points: list[Point]) -> list[Point]:
    """Only the points where a step series changes (and its last point), so a line stays exact."""
    kept: list[Point] = []
    for index, point in enumerate(points):
        if not kept or point[1] != kept[-1][1]:
            if kept and index > 0 and points[index - 1] is not kept[-1]:
                kept.append(points[index - 1])
            kept.append(point)
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


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


def _step_append(points: list[Point], x: float, y: float) -> None:
    """Append to a step series keeping only the first and last point of each run of one value
    (what :func:`steps` keeps): a ten-hour limit line is a handful of points, not 36,000."""
    if len(points) >= 2 and points[-1][1] == y and points[-2][1] == y:
        points[-1] = [x, y]
    else:
        points.append([x, y])


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


def build_series(timeline: Iterable[Mapping[str, Any]], zero: float) -> dict[str, Any]:
    """Full-resolution series and figures from the records; see :func:`thin` for charts."""
    targets: dict[str, dict[str, Any]] = {}
    stress: list[Point] = []
    rps: list[Point] = []
    class_rps: dict[str, list[Point]] = {}
    ratio: list[Point] = []
    replicas: dict[str, list[Point]] = {}
    go: dict[str, list[Point]] = {}
    prometheus: dict[str, list[Point]] = {}
    marks: list[dict[str, Any]] = []
    totals: dict[str, Any] = {"sent": 0, "completed": 0, "status": {}, "errors": {}}
    lag_p99: list[float] = []
    stats: dict[str, Any] | None = None
    samples = 0

    for record in timeline:
        t = _finite(record.get("t"))
        if t is None:
            continue
        x = round(t - zero, 3)
        if abs(x) > MAX_SPAN:  # NB: not a time of this run: a chart axis cannot hold it
            continue
        kind = record.get("kind")
        if kind == "mark":
            # NB: an OOM watcher's mark carries the kernel event's own time in ``at``.
            seen_at = _finite(record.get("at")) if record.get("event") == "oom-kill" else None
            if seen_at is not None and abs(seen_at - zero) > MAX_SPAN:
                seen_at = None
            marks.append({**record, "x": round(seen_at - zero, 3) if seen_at is not None else x})
            continue
        if kind == "stats":
            stats = dict(record)
            continue
        if kind != "sample":
            continue
        samples += 1
        for row in as_list(record.get("targets")):
            if type(row) is not dict:
                continue
            entry = targets.setdefault(
                str(row.get("name", "?")),
                {
                    "usage": [],
                    "limit": [],
                    "working_set": [],
                    "oom_counts": [],
                    "errors": 0,
                    "peak": None,
                },
            )
            if "error" in row:
                entry["errors"] += 1
            if (usage := _bytes(row.get("usage"))) is not None:
                entry["usage"].append([x, usage])
            if (working := _bytes(row.get("working_set"))) is not None:
                entry["working_set"].append([x, working])
            if (limit := _bytes(row.get("limit"))) is not None:
                _step_append(entry["limit"], x, limit)
            if (killed := _finite(row.get("oom_kills"))) is not None:
                if row.get("oom_kills_of") == "run" and not entry["oom_counts"]:
                    # NB: the run's own count starts at 0: a kill before the first sample (a
                    # service killed before the control looked) is a rise too.
                    _step_append(entry["oom_counts"], min(x, 0.0), 0.0)
                _step_append(entry["oom_counts"], x, killed)
            if (peak := _bytes(row.get("peak"))) is not None and (
                entry["peak"] is None or peak > entry["peak"]
            ):
                entry["peak"] = peak
                entry["peak_from"] = str(row.get("peak_from") or "the kernel")
        held = record.get("stress")
        if type(held) is dict and (value := _bytes(held.get("bytes"))) is not None:
            stress.append([x, value])
        traffic = record.get("traffic")
        if type(traffic) is dict and (seconds := _finite(traffic.get("seconds"))) and seconds > 0:
            completed = float(_count(traffic.get("completed")))
            rps.append([x, completed / seconds])
            status = as_dict(traffic.get("status"))
            answered = sum(_count(n) for n in status.values())
            per_class = _classes({str(k): _count(n) for k, n in status.items()})
            failed = sum(_count(n) for n in as_dict(traffic.get("errors")).values())
            if failed:
                per_class["no answer"] = failed
            for name in set(class_rps) | set(per_class):
                class_rps.setdefault(name, []).append([x, per_class.get(name, 0) / seconds])
            if answered:
                ratio.append([x, _count(status.get("503", 0)) / answered])
            totals["sent"] += _count(traffic.get("sent"))
            totals["completed"] += int(completed)
            for name in ("status", "errors"):
                bucket = traffic.get(name)
                if isinstance(bucket, Mapping):
                    for code, count in bucket.items():
                        totals[name][str(code)] = totals[name].get(str(code), 0) + _count(count)
            if (lag := _number(traffic.get("lag_p99_ms"))) is not None:
                lag_p99.append(lag)
        for name, value in _replicas(record.get("replicas")).items():
            _step_append(replicas.setdefault(name, []), x, value)
        queried = record.get("prometheus")
        if type(queried) is dict:
            for name, raw in queried.items():
                if (value := _finite(raw)) is not None:
                    prometheus.setdefault(str(name), []).append([x, value])
        memstats = record.get("go")
        if type(memstats) is dict:
            for name, raw in memstats.items():
                if (value := _number(raw)) is not None:
                    go.setdefault(str(name), []).append([x, value])

    oom_marks = [m for m in marks if m.get("event") == "oom-kill"]
    target_rows: list[dict[str, Any]] = []
    for name, entry in targets.items():
        counts = entry["oom_counts"]
        derived = [
            {"x": point[0], "count": int(point[1] - counts[i - 1][1])}
            for i, point in enumerate(counts)
            if i and point[1] > counts[i - 1][1]
        ]
        exact = [
            _kill(m)
            for m in oom_marks
            if len(targets) == 1 or name in _mark_targets(m) or not _mark_targets(m)
        ]
        kills = exact or derived
        for kill in kills:
            if kill.get("usage") is None:
                # NB: without the kernel's report, the usage just before the kill: the sample
                # after it shows the drop.
                earlier = [p for p in entry["usage"] if p[0] < kill["x"]]
                kill["usage"] = earlier[-1][1] if earlier else None
                kill["usage_from"] = "the last sample before the kill"
        limits = [p[1] for p in entry["limit"]]
        sampled_peak = max((p[1] for p in entry["usage"]), default=None)
        kernel_peak = entry["peak"]
        target_rows.append(
            {
                "name": name,
                "usage": entry["usage"],
                "limit": entry["limit"],
                "working_set": entry["working_set"],
                "oom_kills": kills,
                "oom_kill_total": max(
                    int(counts[-1][1] - counts[0][1]) if counts else 0, len(exact)
                ),
                "peak_usage": kernel_peak if kernel_peak is not None else sampled_peak,
                "peak_from": entry.get("peak_from")
                if kernel_peak is not None
                else ("samples" if sampled_peak is not None else None),
                "peak_sampled": kernel_peak is None,
                "limit_before": entry["limit"][0][1] if entry["limit"] else None,
                "limit_min": min(limits, default=None),
                "limit_max": max(limits, default=None),
                "unreadable_samples": entry["errors"],
            }
        )
    answered_total = sum(totals["status"].values())
    traffic_summary = None
    if rps:
        traffic_summary = {
            **totals,
            "peak_rps": max(p[1] for p in rps),
            "mean_rps": sum(p[1] for p in rps) / len(rps),
            "classes": _classes(totals["status"]),
            "ratio_503": totals["status"].get("503", 0) / answered_total
            if answered_total
            else None,
            "lag_p99_ms": max(lag_p99) if lag_p99 else None,
        }
    go_keys = [k for k in _GO_PREFERRED if k in go] or sorted(go)[:6]
    return {
        "samples": samples,
        "targets": target_rows,
        "stress": stress,
        "stress_peak": max((p[1] for p in stress), default=None),
        "rps": rps,
        "class_rps": dict(sorted(class_rps.items())),
        "ratio_503": ratio,
        "traffic": traffic_summary,
        "replicas": replicas,
        "replicas_range": {
            name: [min(p[1] for p in pts), max(p[1] for p in pts)] for name, pts in replicas.items()
        },
        "go": {k: go[k] for k in go_keys},
        "prometheus": prometheus,
        "marks": marks,
        "stats": stats,
    }


def thin(series: dict[str, Any], max_points: int = MAX_POINTS) -> dict[str, Any]:
    """The same series with chart lines thinned; figures and OOM kills untouched."""
    return {
        **series,
        "targets": [
            {
                **row,
                "usage": minmax(row["usage"], max_points),
                "limit": steps(row["limit"]),
                "working_set": minmax(row.get("working_set", []), max_points),
            }
            for row in series["targets"]
        ],
        "stress": minmax(series["stress"], max_points),
        "rps": minmax(series["rps"], max_points),
        "class_rps": {k: minmax(v, max_points) for k, v in series["class_rps"].items()},
        "ratio_503": minmax(series["ratio_503"], max_points),
        "replicas": {k: steps(v) for k, v in series["replicas"].items()},
        "go": {k: minmax(v, max_points) for k, v in series["go"].items()},
        "prometheus": {k: minmax(v, max_points) for k, v in series.get("prometheus", {}).items()},
    }
