"""Chaos Toolkit probes over this run's latest replay: status ratio and summary.

They read ``STATE/replays/<id>/summary.json`` (see :mod:`chaosmem.traffic.results`), so they work
the same for a replay that ran in this process or in a background worker. Which replay: the one
named by ``replay_id``, else the latest replay of the current run (the chaosmem control sets the
run id), else, outside a run, the latest one this process started. Never the state dir's latest
replay whichever run wrote it: an earlier run's 0% of 503s must not pass this run's hypothesis,
and a run without a replay gets an error that says so.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.state import state_dir
from chaosmem.traffic.results import read_summary
from chaosmem.units import parse_duration
from chaosmem.validate import check_str

__all__ = ["replay_summary", "status_ratio"]

logger = logging.getLogger("chaostoolkit")
STATUS_EXPECTED = "an HTTP status such as 503, a class such as '5xx', or a list of them"


def _status_matcher(status: Any) -> tuple[str, set[int]]:
    items = status if isinstance(status, list | tuple) else [status]
    if not items:
        raise InvalidArgument("status", status, STATUS_EXPECTED)
    codes: set[int] = set()
    for item in items:
        text = str(item).strip().lower() if not isinstance(item, bool) else ""
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            base = int(text[0]) * 100
            codes.update(range(base, base + 100))
        elif text.isdigit() and 100 <= int(text) <= 599:
            codes.add(int(text))
        else:
            raise InvalidArgument("status", status, STATUS_EXPECTED)
    label = ",".join(str(i) for i in items)
    return label, codes


def _summary(configuration: Configuration, replay_id: Any, wait: Any) -> dict[str, Any]:
    rid = None if replay_id is None else check_str(replay_id, name="replay_id")
    patience = parse_duration(wait, name="wait") if wait is not None else 0.0
    state = state_dir(configuration)
    deadline = time.monotonic() + patience
    summary = read_summary(state, rid)
    while summary.get("state") == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        summary = read_summary(state, rid)
    return summary


def status_ratio(
    status: Any = 503,
    replay_id: str | None = None,
    wait: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The share (0..1) of the replay's answered requests whose status is ``status``.

    ``status`` is a status (503), a class ("5xx") or a list of them. The denominator is the
    requests that got a status; requests that got none (timeout, refused, reset) are not
    hidden in it but reported beside it in the log and in ``replay_summary``. A replay with no
    answered request at all has no ratio: that is an error, not 0. ``wait`` (a duration) waits
    for a running replay to end first; without it a running replay gives its ratio so far.
    """
    label, codes = _status_matcher(status)
    summary = _summary(configuration, replay_id, wait)
    by_status = {int(code): int(n) for code, n in summary.get("status", {}).items()}
    answered = sum(by_status.values())
    matched = sum(n for code, n in by_status.items() if code in codes)
    errors = {k: v for k, v in summary.get("errors", {}).items() if v}
    if answered == 0:
        raise ChaosmemError(
            f"replay {summary.get('replay_id')} has no answered request yet "
            f"({summary.get('sent', 0)} sent, "
            f"no status for {summary.get('no_status', 0)}: {errors}); "
            "a status ratio would mean nothing"
        )
    ratio = matched / answered
    logger.info(
        "chaosmem: replay %s (%s): status %s for %d of %d answered requests (%.4f); "
        "%d requests got no status %s",
        summary.get("replay_id"), summary.get("state"), label, matched, answered, ratio,
        summary.get("no_status", 0), errors,
    )  # fmt: skip
    return ratio


def replay_summary(
    replay_id: str | None = None,
    wait: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """The replay's summary: counts by status and error class, req/s, latency percentiles and
    schedule lag (ms), capture statistics with malformed records and their positions."""
    summary = _summary(configuration, replay_id, wait)
    summary.pop("histograms", None)  # the buckets are for merging shards, not for reading
    return summary
