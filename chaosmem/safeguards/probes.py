"""Safeguard probes: numbers that say whether a run has crossed a line *for long enough*.

They are meant for ``chaosaddons.controls.safeguards`` (chaostoolkit-addons), which runs a probe
every ``frequency`` seconds and stops the run (SIGUSR1: the run ends as ``interrupted``, and the
chaosmem control restores every change at once) when the probe's output leaves its tolerance::

    {"name": "503s-under-20pct-for-10s", "type": "probe", "frequency": 1,
     "provider": {"type": "python", "module": "chaosmem.safeguards.probes",
                  "func": "sustained_status_ratio", "arguments": {"status": 503, "duration": "10s"}},
     "tolerance": {"type": "range", "range": [0, 0.2]}}

For an OOM-kill budget, ``chaosmem.limits.probes.oom_kill_count`` with the tolerance
``{"type": "range", "range": [0, BUDGET]}`` is already the guard.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import current_run
from chaosmem.state import state_dir
from chaosmem.traffic.probes import _status_matcher
from chaosmem.traffic.results import latest_id, read_seconds
from chaosmem.units import parse_duration

__all__ = ["sustained_status_ratio"]

logger = logging.getLogger("chaostoolkit")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _run_started() -> float:
    """When the current run (its id set by the chaosmem control) started, to the second.

    A figure describes this run: the state dir's latest replay may be an earlier run's (a
    second ``make demo`` on the same state dir) until this run starts its own, and its 503s
    must not stop this one. The control's run ids begin with the local start time
    (``20261129T120736-…``); without the control there is no run to scope to (0.0)."""
    run = current_run() or ""
    try:
        return time.mktime(time.strptime(run[:15], "%Y%m%dT%H%M%S")) - 1.0
    except (ValueError, OverflowError):
        return 0.0


def sustained_status_ratio(
    status: Any = 503,
    duration: Any = "10s",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The lowest per-second share of ``status`` among the replay's answers over the last
    ``duration``: above a threshold only when *every* second of that window was above it.

    So a tolerance ``[0, 0.2]`` stops the run when the 503 ratio stayed above 20% for the whole
    window, not on one bad second. Returns 0.0 while the replay has run for less than
    ``duration`` (or has not started): the line cannot have been crossed for that long yet.
    Seconds in which no request got an answer (all timed out or were refused) do not count
    either way; the replay's summary reports them. Only seconds since the current run started
    count (see :func:`_run_started`).
    """
    _, codes = _status_matcher(status)
    window = parse_duration(duration, name="duration", minimum=1.0)
    if window > 3600:
        raise InvalidArgument("duration", duration, "a window of at most 1h")
    state = state_dir(configuration)
    replay = latest_id(state)
    if replay is None:
        return 0.0
    since = _run_started()
    seconds = [s for s in read_seconds(state, replay) if _number(s.get("t")) > since]
    if not seconds:
        return 0.0
    newest = max(_number(s.get("t")) for s in seconds)
    recent = [s for s in seconds if _number(s.get("t")) > newest - window]
    if len(recent) < int(window):
        return 0.0
    ratios: list[float] = []
    for second in recent:
        by_status = {int(k): int(v) for k, v in (second.get("status") or {}).items()}
        answered = sum(by_status.values())
        if answered:
            ratios.append(sum(n for code, n in by_status.items() if code in codes) / answered)
    lowest = min(ratios, default=0.0)
    logger.debug("chaosmem: replay %s, lowest ratio over %.0fs: %.4f", replay, window, lowest)
    return lowest
