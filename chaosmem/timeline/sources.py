"""What one timeline sample reads: one source per concern, each cheap enough to run every second.

A source is built once per run from a :class:`SourceSetup` and then asked for a JSON-able value
on every tick; ``None`` means "nothing to say this tick" and leaves the key out of the sample.
Sources never raise into the recorder for the ordinary troubles of a live system (a target not
started yet, a replay that has not written its first second): they say so in the value instead.

Built in: ``targets`` (memory limit, usage, working set, the kernel's peak usage and OOM kills
of each target), ``stress`` (bytes this run's
stressors hold, from their ``STATE/stress/<id>.json``) and ``traffic`` (replay req/s and status mix, from
this run's ``STATE/replays/<id>/seconds.jsonl``). Later concerns add theirs with
:func:`register_source` — e.g. ``go`` (Go MemStats) or ``replicas`` (autoscaling); the report
draws a chart for ``go`` and ``replicas`` whenever samples carry them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import Entry, Ledger, current_run
from chaosmem.stress.status import read_bounded_status
from chaosmem.stress.stopping import STRESSOR_KIND
from chaosmem.targets import MemoryTarget, resolve_target
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.oombase import run_kill_count
from chaosmem.targets.workingset import memory_breakdown
from chaosmem.traffic.results import own_replay_id, replays_dir

__all__ = [
    "Resolver",
    "Source",
    "SourceSetup",
    "build_sources",
    "register_source",
    "target_label",
]

logger = logging.getLogger("chaostoolkit")


Resolver = Callable[[Mapping[str, Any], Mapping[str, Any] | None], MemoryTarget]


class Source(Protocol):
    """One concern's contribution to a sample, stored under ``key``."""

    key: str

    def sample(self) -> Any: ...


@dataclass(frozen=True)
class SourceSetup:
    """Everything a source may need, fixed for the whole run."""

    targets: list[dict[str, Any]]
    configuration: Mapping[str, Any] | None
    state: Path
    started: float
    resolve: Resolver | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The run id the control set: sources read only what this run produced.
    run: str | None = None


SourceFactory = Callable[[SourceSetup], Source | None]
_FACTORIES: dict[str, SourceFactory] = {}


def register_source(key: str) -> Callable[[SourceFactory], SourceFactory]:
    """Add a source to every future recorder; the factory returns ``None`` when it has nothing to
    watch in this run (e.g. no Go service configured), so it costs nothing then."""

    def wrap(factory: SourceFactory) -> SourceFactory:
        _FACTORIES[key] = factory
        return factory

    return wrap


def build_sources(setup: SourceSetup) -> list[Source]:
    sources: list[Source] = []
    for key, factory in _FACTORIES.items():
        try:
            source = factory(setup)
        except Exception as exc:
            logger.warning("chaosmem timeline: source %r is off: %s", key, exc)
            continue
        if source is not None:
            sources.append(source)
    return sources


def target_label(spec: Mapping[str, Any]) -> str:
    """A short name for a target spec, as charts and tables show it."""
    kind = spec.get("type")
    if kind == "cgroup":
        return Path(str(spec.get("path", "?"))).name or str(spec.get("path"))
    if kind == "process":
        return f"pid {spec['pid']}" if "pid" in spec else f"pidfile {spec.get('pidfile', '?')}"
    if kind == "service":
        return str(spec.get("name", "?"))
    if kind == "pod":
        base = f"{spec.get('namespace', 'default')}/{spec.get('name') or spec.get('label_selector', '?')}"
        return f"{base} ({spec['container']})" if spec.get("container") else base
    if kind == "deployment":
        return f"{spec.get('namespace', 'default')}/{spec.get('name', '?')}"
    return json.dumps(dict(spec), sort_keys=True, default=str)


class TargetsSource:
    """Limit, usage and OOM-kill count of each target, resolved lazily.

    A target may not exist when the run starts (a service the method starts, a pod being
    replaced), so resolving is retried each tick until it works, and redone after a read fails.
    """

    key = "targets"

    def __init__(self, setup: SourceSetup) -> None:
        self.specs = setup.targets
        self.configuration = setup.configuration
        self.resolve: Resolver = setup.resolve or resolve_target
        self.resolved: dict[int, MemoryTarget] = {}
        self.peak_reset: dict[int, bool] = {}
        self.reported: set[str] = set()

    def _target(self, index: int) -> MemoryTarget:
        if index not in self.resolved:
            target = self.resolve(self.specs[index], self.configuration)
            if index not in self.peak_reset:
                # NB: once per run: the kernel's peak must describe this run, not the cgroup's past
                reset = getattr(target, "reset_peak", None)
                self.peak_reset[index] = bool(reset()) if callable(reset) else False
            self.resolved[index] = target
        return self.resolved[index]

    def _peak(self, index: int, target: MemoryTarget) -> dict[str, Any]:
        read = getattr(target, "peak_usage", None)
        found = read() if callable(read) else None
        if found is None:
            return {}
        value, name = found
        return {
            "peak": value,
            "peak_from": name + (" (reset at run start)" if self.peak_reset.get(index) else ""),
        }

    def _note(self, row: dict[str, Any], key: str, exc: Exception) -> None:
        row[key] = f"{type(exc).__name__}: {exc}"
        if row[key] not in self.reported:
            self.reported.add(row[key])
            logger.debug("chaosmem timeline: cannot read %s: %s", row["name"], exc)

    def sample(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for index, spec in enumerate(self.specs):
            row: dict[str, Any] = {"name": target_label(spec)}
            target: MemoryTarget | None = None
            try:
                target = self._target(index)
                row["limit"] = target.memory_limit()
                row["oom_kills"] = run_kill_count(target, self.configuration)
                if current_run() is not None and isinstance(target, Cgroup):
                    row["oom_kills_of"] = "run"  # counts from the run's baseline, not the kernel's
                row.update(self._peak(index, target))
            except Exception as exc:
                self.resolved.pop(index, None)
                target = None
                self._note(row, "error", exc)
            if target is not None:
                try:
                    row["usage"] = target.memory_usage()
                except Exception as exc:  # NB: a cluster without metrics-server: the rest stands
                    self._note(row, "usage_error", exc)
                else:
                    try:  # the working set (usage − inactive_file), as the kubelet counts it
                        breakdown = memory_breakdown(target, usage=row["usage"])
                        if breakdown is not None:
                            row["working_set"] = breakdown["working_set"]
                    except Exception as exc:
                        self._note(row, "working_set_error", exc)
            rows.append(row)
            per_pod = getattr(target, "per_pod", None)
            if per_pod is not None:  # a pod or deployment target: a row for each pod too
                try:
                    rows.extend(per_pod())
                except Exception as exc:
                    logger.debug("chaosmem timeline: per-pod rows of %s: %s", row["name"], exc)
        return rows


@register_source("targets")
def _targets(setup: SourceSetup) -> Source | None:
    return TargetsSource(setup) if setup.targets else None


#: A stressor or replay id becomes a file name: nothing else is read as one.
_REPLAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class StressSource:
    """Bytes this run's stressors hold now: the sum of ``"bytes"`` over the status files of the
    stressors the ledger records for this run (``STATE/stress/<id>.json``).

    Which stressors are this run's is the :func:`~chaosmem.stress.probes.stress_outcome` rule:
    in a run, the ledger entries carrying its id; outside a run, those this process recorded
    after the recording began (NB: never a time window around the start: a stressor injected
    within a second before the recording would count). A status file must name the same run as
    its entry (a file another run rewrote is not ours). A file torn mid-write, missing or not a
    regular file is skipped this tick.
    """

    key = "stress"

    def __init__(self, setup: SourceSetup) -> None:
        self.state = setup.state
        self.run = setup.run
        self.pid = os.getpid()
        self.earlier = set() if self.run else {e.id for e in self._entries()}

    def _entries(self) -> list[Entry]:
        try:
            entries = Ledger(self.state).read().entries
        except OSError:
            return []
        return [
            e
            for e in entries
            if e.kind == STRESSOR_KIND
            and e.run == self.run
            and (self.run is not None or e.pid == self.pid)
        ]

    def sample(self) -> dict[str, int] | None:
        total, count = 0, 0
        for entry in self._entries():
            stressor_id = str(entry.undo.get("id", ""))
            if entry.id in self.earlier or not _REPLAY_ID.fullmatch(stressor_id):
                continue
            if ".." in stressor_id:
                continue
            status = read_bounded_status(self.state / "stress" / f"{stressor_id}.json")
            if status is None or status.get("run") != entry.run:
                continue
            held = status.get("bytes")
            if isinstance(held, int | float) and not isinstance(held, bool) and held >= 0:
                total += int(held)
                count += 1
        return {"bytes": total, "stressors": count} if count else None


@register_source("stress")
def _stress(setup: SourceSetup) -> Source | None:
    return StressSource(setup)


class TrafficSource:
    """The seconds of this run's replay since the last tick, folded into one value.

    Which replay is this run's is the traffic probes' rule (:func:`own_replay_id`): the one
    ``STATE/runs/<run>/replay`` names, else, outside a run, the latest this process started;
    never the state dir's ``latest``, whichever run wrote it. A replay already named when the
    recording began started before it, so it is not this recording's either (NB: a time window
    around the start cannot tell them apart: a run begun within a second of the previous one's
    end would count that replay's last second). Its ``seconds.jsonl`` gains one line per second;
    it is read from where the last tick stopped (never re-read whole), and a half-written last
    line waits for the next tick.
    """

    key = "traffic"

    def __init__(self, setup: SourceSetup) -> None:
        self.state = setup.state
        self.run = setup.run
        self.since = setup.started
        self.replay: str | None = None
        self.offset = 0
        self.earlier = self._latest()

    def _latest(self) -> str | None:
        try:
            text = own_replay_id(self.state, self.run)
        except ChaosmemError:
            return None
        return text if _REPLAY_ID.fullmatch(text) and text not in {".", ".."} else None

    def _new_lines(self, replay: str) -> list[dict[str, Any]]:
        if replay != self.replay:
            self.replay, self.offset = replay, 0
        try:
            with (replays_dir(self.state) / replay / "seconds.jsonl").open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        lines: list[dict[str, Any]] = []
        for raw in complete.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and float(line.get("t", 0)) >= self.since:
                lines.append(line)
        return lines

    def sample(self) -> dict[str, Any] | None:
        replay = self._latest()
        if replay is None or replay == self.earlier:
            return None
        lines = self._new_lines(replay)
        if not lines:
            return None
        status: dict[str, int] = {}
        errors: dict[str, int] = {}
        for line in lines:
            for bucket, into in ((line.get("status"), status), (line.get("errors"), errors)):
                if isinstance(bucket, dict):
                    for name, count in bucket.items():
                        into[str(name)] = into.get(str(name), 0) + int(count)
        lags = [
            float(x["lag_p99_ms"]) for x in lines if isinstance(x.get("lag_p99_ms"), int | float)
        ]
        return {
            "replay": replay,
            "seconds": len(lines),
            "sent": sum(int(x.get("sent", 0)) for x in lines),
            "completed": sum(int(x.get("completed", 0)) for x in lines),
            "status": status,
            "errors": errors,
            "lag_p99_ms": max(lags) if lags else None,
        }


@register_source("traffic")
def _traffic(setup: SourceSetup) -> Source | None:
    return TrafficSource(setup)
