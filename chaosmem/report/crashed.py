"""A report for a run that left no journal: rebuilt from its timeline and the ledger.

A SIGKILLed ``chaos run`` (or one the kernel OOM-killed, or a machine that lost power) writes no
journal, but the control appended every sample and mark to ``STATE/runs/<run>/timeline.jsonl``
as they happened, and the ledger holds every change the run made and whether (and when) it was
undone, by the run or by a later ``chaosmem rollback``. This module turns those into a journal
shaped dict marked ``chaosmem_crash_report``, which the verdict always calls ``interrupted``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import Ledger
from chaosmem.report.journal import TimelineLines
from chaosmem.timeline.recorder import TIMELINE_FILE

__all__ = ["CRASH_MARK", "crashed_run_journal", "latest_run"]

#: The key that marks a journal rebuilt by this module.
CRASH_MARK = "chaosmem_crash_report"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _runs(state: Path) -> Path:
    return state / "runs"


def latest_run(state: Path) -> str:
    """The id of the newest run of ``state`` (run ids start with their start time)."""
    try:
        runs = sorted(
            p.name
            for p in _runs(state).iterdir()
            if p.is_dir() and (p / TIMELINE_FILE).is_file() and _RUN_ID.fullmatch(p.name)
        )
    except FileNotFoundError:
        runs = []
    if not runs:
        raise InvalidArgument(
            "--state-dir", str(state), f"a chaosmem state dir holding runs/<run>/{TIMELINE_FILE}"
        )
    return runs[-1]


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(seconds))


def crashed_run_journal(state: Path, run: str | None) -> dict[str, Any]:
    """What is known of ``run`` (default: the newest run of ``state``), journal-shaped."""
    if run is not None and (not _RUN_ID.fullmatch(run) or ".." in run):
        raise InvalidArgument("--run", run, "a run id such as 20250101T120000-1a2b3c4d")
    run = run or latest_run(state)
    path = _runs(state) / run / TIMELINE_FILE
    if not path.is_file():
        raise InvalidArgument("--run", run, f"a run of {state} (no {path})")
    timeline = TimelineLines(path)
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    first = last = None
    # NB: one pass, nothing kept: a long run's timeline is read again, streamed, for the report.
    for record in timeline:
        timeline.count += 1
        t = float(record["t"])
        first = t if first is None else min(first, t)
        last = t if last is None else max(last, t)
        event = record.get("event")
        if event == "experiment-start" and (start is None or t < float(start["t"])):
            start = record
        elif event == "experiment-end" and (end is None or t < float(end["t"])):
            end = record
    if first is None or last is None:
        first = last = path.stat().st_mtime
    title = start.get("title") if start and isinstance(start.get("title"), str) else None
    restored: list[dict[str, Any]] = []
    for entry in Ledger(state).read().entries:
        if entry.run != run:
            continue
        if entry.closed:
            when = _iso(entry.closed_at) if entry.closed_at else "an unknown time"
            restored.append(
                {
                    "kind": entry.kind,
                    "target": entry.target,
                    "done": f"{entry.outcome} at {when}",
                    "error": None,
                }
            )
        else:
            restored.append(
                {
                    "kind": entry.kind,
                    "target": entry.target,
                    "done": None,
                    "error": f"still changed: run `chaosmem rollback --run {run}` to undo it",
                }
            )
    ended = (
        "the control recorded its end, but no journal was written"
        if end
        else "it ended without the control recording its end (SIGKILL, an OOM kill of chaos run "
        "itself, or a lost machine)"
    )
    return {
        CRASH_MARK: True,
        "experiment": {
            "title": title or f"chaosmem run {run}",
            "description": f"Rebuilt from {path} and the ledger: {ended}.",
        },
        "status": "interrupted",
        "start": _iso(first),
        "end": _iso(last),
        "duration": round(last - first, 3),
        "deviated": False,
        "steady_states": {"before": None, "after": None, "during": []},
        "run": [],
        "rollbacks": [],
        "extensions": [
            {
                "name": "chaosmem",
                "run": run,
                "state_dir": str(state),
                "timeline": timeline,
                "restored": restored,
            }
        ],
    }
