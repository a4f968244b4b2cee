"""Where a replay's results live in the state dir, and how to read them back.

This layout is a contract with the report/timeline code and with probes running in another
process than the replay (a background replay is a child process)::

    STATE/replays/latest                     the id of the latest replay (text, one line)
    STATE/runs/<run>/replay                  the id of the latest replay of run <run> (the run
                                             id the chaosmem control sets): what probes read
    STATE/replays/<id>/summary.json          the summary; rewritten atomically every second while
                                             the replay runs ("state": "running"), final at the end
                                             ("done", "stopped" or "failed")
    STATE/replays/<id>/seconds.jsonl         one line per elapsed second, appended live
    STATE/replays/<id>/requests.bin          one 22-byte record per request (see REQUEST_RECORD)
    STATE/replays/<id>/spec.json             the validated options (what a worker process runs)
    STATE/replays/<id>/worker.pid            pid of a background worker process
    STATE/replays/<id>/shards/<n>/           the same files for each worker process of a replay
                                             split across cores (merged into the ones above)

A ``seconds.jsonl`` line counts what happened *during* that second (not running totals)::

    {"t": 1700000001.0, "elapsed": 1, "sent": 950, "completed": 948,
     "status": {"200": 900, "503": 48}, "errors": {"timeout": 2}, "lag_p99_ms": 0.4}

``t`` is the unix time at the end of the second. Error classes are ``timeout``, ``refused``,
``reset``, ``other`` and ``cancelled`` (in flight when the replay was stopped).
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import current_run
from chaosmem.state import private_dir, read_private, replace_private
from chaosmem.traffic.histogram import Histogram
from chaosmem.validate import check_name

__all__ = [
    "ERROR_CODES",
    "REQUEST_RECORD",
    "SecondsTally",
    "latest_id",
    "merge_seconds",
    "merge_summaries",
    "ms_percentiles",
    "new_replay_id",
    "own_replay_id",
    "read_requests",
    "read_seconds",
    "read_summary",
    "replay_dir",
    "replays_dir",
    "set_latest",
    "write_json_atomic",
]

#: scheduled send time (µs since the replay's start), actual send time (µs since start),
#: latency in µs (-1 when no response), and the outcome: an HTTP status, or a negative error
#: code from :data:`ERROR_CODES`. Little-endian, no padding: 22 bytes a request.
REQUEST_RECORD = struct.Struct("<qqih")
ERROR_CODES = {"timeout": -1, "refused": -2, "reset": -3, "other": -4, "cancelled": -5}
ERROR_NAMES = {code: name for name, code in ERROR_CODES.items()}


def replays_dir(state: Path) -> Path:
    return state / "replays"


def replay_dir(state: Path, replay_id: str) -> Path:
    """``STATE/replays/<id>``; the id must be a plain name (``"../../x"`` is refused)."""
    return replays_dir(state) / check_name(replay_id, name="replay_id")


def new_replay_id() -> str:
    """Sortable by start time, unique across processes: ``20250101T120000Z-1a2b3c``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers in other processes see the old file or the new one, never half of one.

    Compact: a running replay rewrites its summary every second, and ``json`` only uses its C
    encoder without ``indent`` (indented, a summary with its histograms took about 2 ms, a
    pause of the replay's event loop that shows in its lag).
    """
    replace_private(path, json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


#: A run id becomes a directory name: nothing else is accepted as one.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: The latest replay this process started, by state dir (what probes read outside a run).
_started_here: dict[Path, str] = {}


def _run_pointer(state: Path, run: str) -> Path:
    if not _RUN_ID.fullmatch(run) or ".." in run:
        raise ChaosmemError(f"run id {run!r} (from $CHAOSMEM_RUN_ID) is not a valid run id")
    return state / "runs" / run / "replay"


def _write_pointer(path: Path, replay_id: str) -> None:
    private_dir(path.parent)
    replace_private(path, check_name(replay_id, name="replay_id") + "\n")


def set_latest(state: Path, replay_id: str) -> None:
    """Make ``replay_id`` the latest replay of the state dir, of the current run (when the
    control set one) and of this process."""
    _write_pointer(replays_dir(state) / "latest", replay_id)
    run = current_run()
    if run:
        _write_pointer(_run_pointer(state, run), replay_id)
    _started_here[state] = replay_id


def own_replay_id(state: Path, run: str | None = None) -> str:
    """The latest replay of the current run, else (outside a run) the latest this process started.

    Never the state dir's ``latest`` whichever run wrote it: a figure describes this run only.
    """
    run = run if run is not None else current_run()
    if run:
        try:
            text = read_private(_run_pointer(state, run), limit=4096).strip()
        except FileNotFoundError:
            text = ""
        if not text:
            raise ChaosmemError(
                f"no replay has run in this run ({run}, state dir {state}): start replay_traffic "
                "earlier in the method, or pass replay_id"
            )
        return check_name(text, name=f"runs/{run}/replay")
    if state not in _started_here:
        raise ChaosmemError(
            f"no replay has run in this process with state dir {state}, and there is no chaosmem "
            "run to look in: run replay_traffic first, add the chaosmem control to the "
            "experiment (its run id scopes the probes), or pass replay_id"
        )
    return _started_here[state]


def latest_id(state: Path) -> str | None:
    try:
        text = read_private(replays_dir(state) / "latest", limit=4096).strip()
    except FileNotFoundError:
        return None
    return check_name(text, name="replays/latest") if text else None


def read_summary(state: Path, replay_id: str | None = None) -> dict[str, Any]:
    """The summary of ``replay_id`` (default: this run's latest replay, see :func:`own_replay_id`)."""
    rid = replay_id or own_replay_id(state)
    path = replay_dir(state, rid) / "summary.json"
    try:
        data: dict[str, Any] = json.loads(read_private(path))
    except FileNotFoundError:
        raise ChaosmemError(f"replay {rid} has no summary at {path}; did it start?") from None
    except ValueError as exc:
        raise ChaosmemError(f"replay {rid}: {path} is not JSON ({exc})") from None
    return data


def read_seconds(state: Path, replay_id: str) -> list[dict[str, Any]]:
    """The per-second lines of a replay; a torn last line (still being written) is skipped."""
    lines: list[dict[str, Any]] = []
    try:
        text = (replay_dir(state, replay_id) / "seconds.jsonl").read_text(encoding="utf-8")
    except FileNotFoundError:
        return lines
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def read_requests(path: Path) -> Iterator[tuple[int, int, int, int]]:
    """(scheduled_us, sent_us, latency_us, code) for each request record of ``requests.bin``."""
    with path.open("rb") as stream:
        while chunk := stream.read(REQUEST_RECORD.size * 4096):
            usable = len(chunk) - len(chunk) % REQUEST_RECORD.size
            yield from REQUEST_RECORD.iter_unpack(chunk[:usable])


_STATES = ("failed", "running", "stopped", "done")  # the first one any shard is in wins
_SUMMED = (
    "sent",
    "completed",
    "no_status",
    "in_flight",
    "retried_stale_connections",
    "unsent_due",
    "warmed_connections",
)


def _num(value: Any) -> float | None:
    """A finite number from a shard's (or a pod log's) JSON, else None: never trusted blindly."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _add(into: dict[str, int], counts: Any) -> None:
    if isinstance(counts, dict):
        for key, n in counts.items():
            if type(n) is int and n >= 0 and len(str(key)) <= 32:
                into[str(key)] = into.get(str(key), 0) + n


def _hist(data: Any, *names: str) -> Histogram:
    for name in names:
        data = data.get(name) if isinstance(data, dict) else None
    if data is None:
        return Histogram()
    try:
        return Histogram.from_sparse(data)
    except (ValueError, TypeError):
        return Histogram()


def ms_percentiles(hist: Histogram, shares: dict[str, float]) -> dict[str, float | None]:
    """Percentiles of a histogram of microseconds, in milliseconds (None when it is empty)."""
    values = hist.percentiles(list(shares.values()))
    return {
        name: round(value / 1000, 3) if value is not None else None
        for name, value in zip(shares, values, strict=True)
    }


LATENCY_SHARES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
LAG_SHARES = {"p50": 0.5, "p99": 0.99, "max": 1.0}


def merge_summaries(parts: list[dict[str, Any]], *, base: dict[str, Any]) -> dict[str, Any]:
    """One replay's summary from its shards' (worker processes or pods) summaries.

    Counts add up; latency and lag percentiles come from the merged histogram buckets (never
    from averaging percentiles); the duration runs from the shared start to the last end.
    ``base`` gives what the shards do not know: ``replay_id``, ``pid``, ``options``... A shard
    that has not written a summary yet counts as running.
    """
    merged: dict[str, Any] = dict(base)
    status: dict[str, int] = {}
    errors: dict[str, int] = {name: 0 for name in ERROR_CODES}
    latency, lag = Histogram(), Histogram()
    totals = dict.fromkeys(_SUMMED, 0)
    states: list[str] = []
    problems: list[str] = []
    starts: list[float] = []
    duration = 0.0
    passes = 0
    cpu = 0.0
    for part in parts:
        states.append(str(part.get("state", "running")))
        if part.get("error"):
            problems.append(str(part["error"]))
        for name in _SUMMED:
            totals[name] += _count(part.get(name))
        _add(status, part.get("status"))
        _add(errors, part.get("errors"))
        latency.merge(_hist(part, "histograms", "latency_us"))
        lag.merge(_hist(part, "histograms", "lag_us"))
        if (started_at := _num(part.get("started_at"))) is not None:
            starts.append(started_at)
        duration = max(duration, _num(part.get("duration_s")) or 0.0)
        cpu += max(_num(part.get("cpu_s")) or 0.0, 0.0)
        passes = max(passes, _count(part.get("passes")))
    if len(parts) < int(base.get("workers", len(parts))):
        states.append("running")
    state = next((s for s in _STATES if s in states), "running")
    started = min(starts) if starts else float(base.get("started_at", time.time()))
    finished = sum(status.values()) + sum(errors.values())
    latency_ms: dict[str, Any] = ms_percentiles(latency, LATENCY_SHARES)
    latency_ms["mean"] = round(latency.mean / 1000, 3) if latency.mean is not None else None
    first = parts[0] if parts else {}
    merged.update(totals)
    merged.update(
        {
            "state": state,
            "error": "; ".join(dict.fromkeys(problems)) or None,
            "started_at": round(started, 3),
            "ended_at": round(started + duration, 3) if state != "running" else None,
            "duration_s": round(duration, 4),
            "status": dict(sorted(status.items())),
            "errors": errors,
            "req_per_s": round(finished / duration, 1) if duration else 0.0,
            "latency_ms": latency_ms,
            "lag_ms": ms_percentiles(lag, LAG_SHARES),
            "histograms": {"latency_us": latency.to_sparse(), "lag_us": lag.to_sparse()},
            "passes": passes,
            "cpu_s": round(cpu, 3),
            "filtered": first.get("filtered", base.get("filtered", 0)),
            "capture": first.get("capture", base.get("capture")),
            # one engine for every shard of a machine; pods say which ran in them
            "engine": "+".join(sorted({str(p["engine"]) for p in parts if p.get("engine")}))
            or None,
        }
    )
    return merged


def merge_seconds(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``seconds.jsonl`` line from the shards' lines for the same second of the shared clock.

    The lag p99 comes from the shards' lag buckets (``lag_hist``) when they kept them.
    """
    status: dict[str, int] = {}
    errors: dict[str, int] = {}
    lag = Histogram()
    lags: list[float] = []
    for line in lines:
        _add(status, line.get("status"))
        _add(errors, line.get("errors"))
        if "lag_hist" in line:
            lag.merge(_hist(line, "lag_hist"))
        elif (p99_ms := _num(line.get("lag_p99_ms"))) is not None:
            lags.append(p99_ms)
    p99 = lag.percentile(0.99)
    if p99 is not None:
        lags.append(p99 / 1000)
    merged: dict[str, Any] = {
        "t": max((_num(x.get("t")) or 0.0 for x in lines), default=0.0),
        "elapsed": max((_num(x.get("elapsed")) or 0.0 for x in lines), default=0.0),
        "sent": sum(_count(x.get("sent")) for x in lines),
        "completed": sum(_count(x.get("completed")) for x in lines),
        "status": status,
        "errors": errors,
        "lag_p99_ms": round(max(lags), 3) if lags else None,
    }
    if lines and all(x.get("partial") for x in lines):
        merged["partial"] = True
    if any(x.get("lost") for x in lines):
        merged["lost"] = True  # a shard's line for this second never reached us (see podlogs)
    return merged


class SecondsTally:
    """A shard's running summary from its per-second lines alone.

    Why: a pod's own summary is its last log line, printed when it ends; while it runs, its
    per-second lines are all the coordinator has. Their sums are the shard's counts up to its
    last complete second (what :func:`merge_summaries` adds up), and their lag and latency
    buckets give the percentiles.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.completed = 0
        self.status: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.lag = Histogram()
        self.latency = Histogram()
        self.elapsed = 0.0

    def add(self, line: dict[str, Any]) -> None:
        self.sent += _count(line.get("sent"))
        self.completed += _count(line.get("completed"))
        _add(self.status, line.get("status"))
        _add(self.errors, line.get("errors"))
        self.lag.merge(_hist(line, "lag_hist"))
        self.latency.merge(_hist(line, "latency_hist"))
        self.elapsed = max(self.elapsed, _num(line.get("elapsed")) or 0.0)

    def summary(self, *, started_at: float) -> dict[str, Any]:
        """In the shape of a shard's ``summary.json`` (``"state": "running"``)."""
        return {
            "state": "running",
            "started_at": started_at,
            "duration_s": self.elapsed,
            "sent": self.sent,
            "completed": self.completed,
            "no_status": sum(self.errors.values()),
            "status": dict(self.status),
            "errors": dict(self.errors),
            "histograms": {"lag_us": self.lag.to_sparse(), "latency_us": self.latency.to_sparse()},
        }
