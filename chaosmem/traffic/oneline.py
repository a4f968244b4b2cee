"""One line a person reads for a replay's result, put in the action's ``summary``.

The report leads an activity's row with its output's ``summary``; without it a replay's row was
its raw JSON cut mid-key. Only figures go in: requests, the status mix, the 503 ratio (of the
answered requests, as :func:`chaosmem.traffic.probes.status_ratio` counts it), errors by class,
rate and the latency and schedule-lag p99 — never options, headers or the capture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["replay_line", "started_line", "stopped_line"]


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _mix(status: Any) -> tuple[str, int, int]:
    """The status mix by class ("2xx 90, 5xx 10"), the answered count and the 503 count."""
    classes: dict[str, int] = {}
    answered = n503 = 0
    if isinstance(status, Mapping):
        for code, count in status.items():
            n = _count(count)
            answered += n
            text = str(code)
            if text == "503":
                n503 += n
            key = f"{text[0]}xx" if len(text) == 3 and text.isdigit() else "other"
            classes[key] = classes.get(key, 0) + n
    mix = ", ".join(f"{k} {v}" for k, v in sorted(classes.items()) if v)
    return mix, answered, n503


def _p99(section: Any) -> str | None:
    value = section.get("p99") if isinstance(section, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.1f} ms"
    return None


def replay_line(summary: Mapping[str, Any]) -> str:
    """ "replay r1 finished: 200 sent, 200 answered (2xx 180, 5xx 20), 503 ratio 10.0%, …"."""
    mix, answered, n503 = _mix(summary.get("status"))
    parts = [
        f"{_count(summary.get('sent'))} sent, {answered} answered" + (f" ({mix})" if mix else "")
    ]
    parts.append(f"503 ratio {n503 / answered:.1%}" if answered else "503 ratio n/a (no answer)")
    errors = summary.get("errors")
    if isinstance(errors, Mapping):
        failed = {str(k): _count(v) for k, v in errors.items() if _count(v)}
        if failed:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))
            parts.append(f"{sum(failed.values())} without status ({detail})")
    rate = summary.get("req_per_s")
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        parts.append(f"{rate:g} req/s")
    for label, key in (("latency", "latency_ms"), ("lag", "lag_ms")):
        if (p99 := _p99(summary.get(key))) is not None:
            parts.append(f"{label} p99 {p99}")
    head = f"replay {summary.get('replay_id', '?')} {summary.get('state', '?')}"
    return f"{head}: " + ", ".join(parts)


def started_line(started: Mapping[str, Any]) -> str:
    return f"replay {started.get('replay_id', '?')} started in the background (pid {started.get('pid', '?')})"


def stopped_line(stopped: list[str], summaries: Mapping[str, Any]) -> str:
    """The final line of each stopped replay, or what stop found ("no background replay …")."""
    lines = [
        replay_line(s) if "error" not in s or "sent" in s else f"replay {rid}: {s['error']}"
        for rid, s in summaries.items()
        if isinstance(s, Mapping)
    ]
    return "; ".join(lines) if lines else "; ".join(stopped)
