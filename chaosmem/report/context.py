"""Journal (+ its timeline) -> the context every template renders from.

The one place that decides what a report says; templates only lay it out. The journal is
redacted first (:mod:`chaosmem.report.redact`), so nothing below can leak a secret by mistake.
The context is plain JSON-able data: ``--format json`` prints it as is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from chaosmem.report.journal import as_dict, as_list, chaosmem_extension
from chaosmem.report.redact import redact, unknown_env_values
from chaosmem.report.series import MAX_BYTES, build_series
from chaosmem.report.verdict import SEVERITY, describe_tolerance, failure_message, judge, worst
from chaosmem.timeline.sources import target_label
from chaosmem.timestamps import iso_seconds
from chaosmem.units import format_size

__all__ = ["experiment_context", "report_context"]

#: Longest probe output kept in a report; the journal has the rest.
MAX_OUTPUT = 600
#: Longest one-line summary of an output in a table; the full output is folded below it.
SUMMARY = 120
_ACTIVITY_MARKS = {"activity-start", "activity-end"}
#: Keys of an output that say what it means, shown first and alone (the rest is folded).
_HEADLINE_KEYS = ("verdict", "summary")


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso_plain(seconds: float | None) -> str | None:
    """ISO 8601 in UTC without an offset: the ``timestamp`` form JUnit readers expect."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _output(value: Any) -> str | None:
    """A probe's or action's output, readable and bounded."""
    if value is None:
        return None
    if isinstance(value, Mapping) and {"status", "headers", "body"} <= set(value):
        body = value["body"]
        text = f"HTTP {value['status']}: " + (
            body if isinstance(body, str) else json.dumps(body, sort_keys=True, default=str)
        )
    elif isinstance(value, Mapping) and {"status", "stdout", "stderr"} <= set(value):
        parts = [f"exit {value['status']}"]
        for stream in ("stdout", "stderr"):
            if str(value[stream]).strip():
                parts.append(f"{stream}: {str(value[stream]).strip()}")
        text = "; ".join(parts)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Mapping):
        # NB: not sort_keys: "summary" and "verdict" would sort last and be cut off at MAX_OUTPUT;
        # they lead, and the rest keeps the order the activity returned it in.
        first = {key: value[key] for key in _HEADLINE_KEYS if key in value}
        rest = {key: item for key, item in value.items() if key not in first}
        text = json.dumps({**first, **rest}, default=str)
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    return (
        text
        if len(text) <= MAX_OUTPUT
        else f"{text[:MAX_OUTPUT]}… ({len(text) - MAX_OUTPUT} more characters)"
    )


def _headline(output: Any) -> str | None:
    """The line an output gives for people: its ``summary``, led by its ``verdict`` when it has
    both (``stress_outcome``: "oom-killed: the kernel OOM-killed all 1 stressor(s) …")."""
    if not isinstance(output, Mapping):
        return None
    parts = []
    for key in _HEADLINE_KEYS:
        item = output.get(key)
        if isinstance(item, str | int | float) and str(item).strip():
            parts.append(str(item).strip())
    return ": ".join(parts) or None


def _activity(run: Mapping[str, Any], zero: float) -> dict[str, Any]:
    activity = as_dict(run.get("activity"))
    provider = as_dict(activity.get("provider"))
    start = iso_seconds(run.get("start"))
    output = run.get("output")
    text = _output(output)
    summary = _headline(output)
    if summary is None:
        summary = text if text is None or len(text) <= SUMMARY else text[: SUMMARY - 1] + "…"
    return {
        "kind": "activity",
        "name": str(activity.get("name", "?")),
        "type": str(activity.get("type", "?")),
        "provider": str(provider.get("func") or provider.get("path") or provider.get("url") or ""),
        "status": str(run.get("status", "?")),
        "offset": None if start is None else round(start - zero, 3),
        "duration": run.get("duration") if isinstance(run.get("duration"), int | float) else None,
        "summary": summary.strip().splitlines()[0][:300] if summary else None,
        "output": text,
        "error": failure_message(dict(run)) if run.get("status") == "failed" else None,
        "background": bool(activity.get("background")),
    }


def _state(state: Any, zero: float) -> dict[str, Any] | None:
    if not isinstance(state, Mapping):
        return None
    probes = []
    for probe in as_list(state.get("probes")):
        if isinstance(probe, Mapping):
            row = _activity(probe, zero)
            activity = as_dict(probe.get("activity"))
            row["tolerance"] = describe_tolerance(activity.get("tolerance"))
            row["met"] = probe.get("tolerance_met")
            probes.append(row)
    return {"met": state.get("steady_state_met"), "probes": probes}


def _event(mark: Mapping[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in mark.items() if k not in {"t", "x", "kind", "event"}}
    if mark.get("event") == "oom-kill":
        target = fields.pop("target", None)
        target = target_label(target) if isinstance(target, Mapping) else target
        cgroup = fields.pop("cgroup", None)
        if not target and isinstance(cgroup, str):
            target = cgroup.rstrip("/").rsplit("/", 1)[-1]
        fields.pop("at", None)  # already the row's time
        pid, command = fields.pop("victim_pid", None), fields.pop("victim_command", None)
        victim = (
            f"pid {pid}" + (f" ({command})" if isinstance(command, str) else "")
            if isinstance(pid, int)
            else "a process"
        )
        facts = _kill_facts(fields)
        if "count" in fields:
            fields["kills so far"] = fields.pop("count")
        what = f"the kernel OOM-killed {victim}" + (f" in {target}" if target else "")
        separator = "; "
    else:
        what, facts, separator = str(mark.get("event")), [], ", "
    detail = separator.join(
        [
            *facts,
            *(
                f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
                for k, v in fields.items()
            ),
        ]
    )
    return {
        "kind": "event",
        "name": what,
        "event": mark.get("event"),
        "offset": mark.get("x"),
        "detail": detail,
    }


def _size(value: Any) -> str | None:
    """A size from a journal, formatted; None for anything that is not one (NB: comparing, not
    converting, so an int too large for a float is refused rather than raising)."""
    if type(value) not in (int, float) or not 0 <= value <= MAX_BYTES:  # NaN fails both
        return None
    return format_size(float(value))


def _kill_facts(fields: dict[str, Any]) -> list[str]:
    """Usage and limit at the kill and the memory.stat breakdown, popped from ``fields``."""
    facts: list[str] = []
    usage, limit = _size(fields.pop("usage", None)), _size(fields.pop("limit", None))
    source = fields.pop("source", None)
    if usage:
        facts.append(
            f"usage {usage}"
            + (f" of a {limit} limit" if limit else "")
            + " at the kill"
            + (f" ({source})" if isinstance(source, str) else "")
        )
    elif isinstance(source, str):
        facts.append(f"details {source}")
    rss = _size(fields.pop("victim_anon_rss", None))
    if rss:
        facts.append(f"victim's anon rss {rss}")
    stat = fields.pop("stat", None)
    if isinstance(stat, Mapping):
        parts = [f"{k} {v}" for k, raw in stat.items() if (v := _size(raw))]
        if parts:
            facts.append("memory.stat: " + ", ".join(parts))
    return facts


def _restored(items: Iterable[Any]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        if isinstance(item, Mapping):
            target = item.get("target")
            rows.append(
                {
                    "what": str(item.get("kind") or "change")
                    + (
                        f" on {target_label(target) if isinstance(target, Mapping) else target}"
                        if target
                        else ""
                    ),
                    "done": None if item.get("done") is None else str(item.get("done")),
                    "error": None if item.get("error") is None else str(item.get("error")),
                }
            )
        else:
            rows.append({"what": "change", "done": str(item), "error": None})
    return rows


def _finds(runs: Iterable[Mapping[str, Any]], word: str, zero: float) -> list[dict[str, Any]]:
    return [row for r in runs if word in (row := _activity(r, zero))["provider"]]


def _reaction_time(runs: Iterable[Mapping[str, Any]]) -> float | None:
    """The longest autoscaling reaction time a probe of the run returned (seconds), if any."""
    found: list[float] = []
    for r in runs:
        provider = as_dict(as_dict(r.get("activity")).get("provider"))
        if "autoscaling" not in str(provider.get("module", "")) + str(provider.get("func", "")):
            continue
        output = r.get("output")
        if isinstance(output, Mapping):
            output = output.get("reaction_time", output.get("seconds"))
        if isinstance(output, int | float) and not isinstance(output, bool) and output >= 0:
            found.append(float(output))
    return max(found, default=None)


def _figures(series: Mapping[str, Any], runs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The headline numbers a game day's summary puts side by side."""
    targets = series["targets"]
    peaks = [t["peak_usage"] for t in targets if t["peak_usage"] is not None]
    traffic = series["traffic"]
    return {
        "peak_memory": max(peaks, default=None),
        "oom_kills": sum(t["oom_kill_total"] for t in targets) if targets else None,
        "ratio_503": traffic["ratio_503"] if traffic else None,
        "reaction_time": _reaction_time(runs),
    }


def _go_health(runs: Iterable[Mapping[str, Any]], zero: float) -> list[dict[str, Any]]:
    """What ``chaosmem.gomem.probes.memory_health`` concluded, in words, with when."""
    rows: list[dict[str, Any]] = []
    for r in runs:
        provider = as_dict(as_dict(r.get("activity")).get("provider"))
        output = r.get("output")
        if provider.get("func") != "memory_health" or not isinstance(output, Mapping):
            continue
        start = iso_seconds(r.get("start"))
        rows.append(
            {
                "probe": str(as_dict(r.get("activity")).get("name", "?")),
                "offset": None if start is None else round(start - zero, 3),
                "pattern": str(output.get("pattern", "?")),
                "score": output.get("score"),
                "summary": str(output.get("summary", "")),
            }
        )
    return rows


def _safeguard(extension: Mapping[str, Any], zero: float) -> dict[str, Any] | None:
    """Which safeguard stopped the run, when (seconds into it) and what its probe returned."""
    guard = extension.get("safeguard")
    if not isinstance(guard, Mapping):
        return None
    raw = guard.get("at")
    at = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    return {
        "name": str(guard.get("name", "?")),
        "offset": round(at - zero, 3) if at is not None else None,
        "at": _iso(at),
        "output": _output(guard.get("output")),
    }


def _guard_reason(guard: Mapping[str, Any] | None) -> list[str]:
    if not guard:
        return []
    when = f" at +{guard['offset']:g}s ({guard['at']})" if guard["offset"] is not None else ""
    got = f": its probe returned {guard['output']}" if guard["output"] is not None else ""
    return [f"safeguard '{guard['name']}' stopped the run{when}{got}"]


def _evidence(items: Iterable[Any], zero: float) -> list[dict[str, Any]]:
    """The pprof captures the ``go`` timeline source kept before an OOM kill (see
    :mod:`chaosmem.gomem.evidence`): when, why, goroutines, top allocation sites, files."""
    rows: list[dict[str, Any]] = []
    for item in items:
        at = item.get("t")
        raw_top = item.get("top")
        top: list[Any] = raw_top if isinstance(raw_top, list) else []
        rows.append(
            {
                "offset": round(float(at) - zero, 3) if isinstance(at, int | float) else None,
                "reason": str(item.get("reason", "?")),
                "goroutines": item.get("goroutines"),
                "top": [dict(t) for t in top[:5] if isinstance(t, Mapping)],
                "heap_profile": item.get("heap_profile"),
                "goroutine_dump": item.get("goroutine_dump"),
                "errors": [str(item[k]) for k in ("heap_error", "goroutine_error") if item.get(k)],
            }
        )
    return rows


def experiment_context(
    journal: Mapping[str, Any],
    *,
    source: str,
    environ: Mapping[str, str] | None = None,
    redact_values: Iterable[str] = (),
) -> dict[str, Any]:
    """Everything a report says about one journal."""
    clean = redact(journal, environ=environ, extra=redact_values)
    experiment: dict[str, Any] = clean["experiment"]
    extension = chaosmem_extension(clean)
    timeline = extension["timeline"]
    start, end = iso_seconds(clean.get("start")), iso_seconds(clean.get("end"))
    first = next(
        (
            float(r["t"])
            for r in timeline
            if type(r.get("t")) in (int, float) and 0 < r["t"] < 1e11  # NB: a unix time
        ),
        None,
    )
    known = [x for x in (start, first) if x is not None]
    zero = min(known) if known else 0.0
    verdict = judge(clean)
    env_warnings = [
        f"${name} fed a secret when the experiment ran but is not set where this report was "
        "rendered, so its value could not be redacted: render reports in the run's environment"
        for name in unknown_env_values(as_dict(journal.get("experiment")), environ)
    ]
    series = build_series(timeline, zero)
    evidence = _evidence(series.pop("evidence"), zero)
    runs = [r for r in as_list(clean.get("run")) if isinstance(r, Mapping)]
    method = [_activity(r, zero) for r in runs]
    events = [_event(m) for m in series["marks"] if m.get("event") not in _ACTIVITY_MARKS]
    if series["marks_left_out"]:
        events.append(
            {
                "kind": "event",
                "name": f"… and {series['marks_left_out']} more marks, not listed",
                "event": None,
                "offset": None,
                "detail": f"the first {len(series['marks'])} are; the figures count them all",
            }
        )
    timeline_rows = sorted(method + events, key=lambda r: (r["offset"] is None, r["offset"] or 0.0))
    states = as_dict(clean.get("steady_states"))
    hypothesis = experiment.get("steady-state-hypothesis")
    hypothesis = hypothesis if isinstance(hypothesis, Mapping) else {}
    all_probes = [
        p
        for s in (states.get("before"), states.get("after"))
        if isinstance(s, Mapping)
        for p in as_list(s.get("probes"))
        if isinstance(p, Mapping)
    ]
    return {
        "source": source,
        "title": str(experiment.get("title", "untitled experiment")),
        "description": str(experiment.get("description", "")),
        "tags": [str(t) for t in as_list(experiment.get("tags"))],
        "verdict": {
            "status": verdict.status,
            "reasons": _guard_reason(_safeguard(extension, zero)) + verdict.reasons,
            "warnings": verdict.warnings + env_warnings,
            "checks": verdict.checks,
        },
        "redaction_warnings": env_warnings,
        "chaos": {
            "status": clean.get("status"),
            "deviated": bool(clean.get("deviated")),
            "version": clean.get("chaoslib-version"),
            "node": clean.get("node"),
            "platform": clean.get("platform"),
        },
        "run": extension.get("run"),
        "started": _iso(start),
        "started_at": _iso_plain(start),
        "ended": _iso(end),
        "duration": clean.get("duration")
        if isinstance(clean.get("duration"), int | float)
        else None,
        "hypothesis": {
            "title": str(hypothesis.get("title", "")),
            "declared": [
                {
                    "name": str(p.get("name", "?")),
                    "tolerance": describe_tolerance(p.get("tolerance")),
                }
                for p in as_list(hypothesis.get("probes"))
                if isinstance(p, Mapping)
            ],
            "before": _state(states.get("before"), zero),
            "after": _state(states.get("after"), zero),
            "during_deviations": sum(
                1
                for s in as_list(states.get("during"))
                if isinstance(s, Mapping) and s.get("steady_state_met") is False
            ),
        },
        "method": timeline_rows,
        "rollbacks": [
            _activity(r, zero) for r in as_list(clean.get("rollbacks")) if isinstance(r, Mapping)
        ],
        "restored": _restored(extension["restored"]),
        "autoscaling": _finds(runs, "autoscaling", zero) + _finds(all_probes, "autoscaling", zero),
        "figures": _figures(series, runs + all_probes),
        "go_health": _go_health(runs, zero),
        "safeguard": _safeguard(extension, zero),
        "timeline": series,
        "go_evidence": evidence,
    }


def report_context(experiments: list[dict[str, Any]]) -> dict[str, Any]:
    """One report over one or more experiments: a game day when there are several."""
    statuses = [e["verdict"]["status"] for e in experiments]
    return {
        "title": experiments[0]["title"]
        if len(experiments) == 1
        else f"Game day: {len(experiments)} experiments",
        "gameday": len(experiments) > 1,
        "verdict": worst(statuses),
        "counts": {s: statuses.count(s) for s in SEVERITY if s in statuses},
        "generated": _iso(time.time()),
        "experiments": experiments,
    }
