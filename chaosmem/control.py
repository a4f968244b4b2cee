"""The chaosmem Chaos Toolkit control: a run id, OOM-kill timestamps, and a guaranteed restore.

Declare it in an experiment::

    "controls": [{"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}]

Why it exists: Chaos Toolkit's default rollback strategy skips the experiment's rollbacks when a
run fails or is interrupted (SIGINT, SIGTERM) — exactly when a tightened limit or a running
stressor most needs undoing. Controls still run then, so at the end of every run, however it
ended, this control undoes every ledger entry the run left open. (A SIGKILLed run runs nothing;
``chaosmem rollback`` undoes it later from the same ledger.)

It also gives the run an id (every ledger entry of the run carries it, child processes inherit
it), records the run's timeline (:class:`chaosmem.timeline.Recorder`: limits, usage, stress,
traffic, every ``interval``, plus each activity's start and end), watches each local target's
cgroup for OOM kills with exact times (counted from the run's baseline: a cgroup made in this
run from 0, see :mod:`chaosmem.targets.oombase`), and stores all of it, with what it restored,
in the journal under ``extensions`` (``{"name": "chaosmem", "timeline": [...], "restored": [...]}``).

At the end the restore comes first (only the OOM counters are read before it), then the
watchers and the recorder are stopped with bounded waits; the run stays reachable for
:func:`cleanup_control` until its restore has run. When SIGTERM or SIGINT stopped a blocking
chaosmem activity (:mod:`chaosmem.interrupts`), the control ends the run there and marks the
journal ``interrupted``: Chaos Toolkit's provider would record a failed activity and carry on.

Arguments (``provider.arguments``): ``interval`` (default ``"1s"``), ``services`` (fixtures,
see :func:`_start_fixtures`), ``go`` (a Go service's MemStats, gctrace and pprof evidence on the
timeline, see :mod:`chaosmem.gomem.source`) and ``prometheus_queries`` (PromQL values on the
timeline, see :mod:`chaosmem.prometheus.source`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets

import chaosmem.autoscaling.sources  # noqa: F401  (registers the timeline's replicas source)
from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.gomem.source import parse_go_argument
from chaosmem.interrupts import Interrupt, note_signals, take_interrupts
from chaosmem.ledger import set_current_run
from chaosmem.local.actions import start_service
from chaosmem.prometheus.client import settings_from
from chaosmem.prometheus.source import parse_queries
from chaosmem.rollback import rollback
from chaosmem.safeguards.trip import holding_exits, tripped
from chaosmem.state import private_dir, state_dir
from chaosmem.targets import TARGET_TYPES, OomWatch, resolve_target
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.oombase import Baseline, RunKills, forget_run, kills_of_run
from chaosmem.targets.oomwatch import OomEvent, OomWatcher
from chaosmem.timeline import Recorder
from chaosmem.units import parse_duration

__all__ = [
    "after_activity_control",
    "after_experiment_control",
    "before_activity_control",
    "before_experiment_control",
    "before_rollback_control",
    "cleanup_control",
    "configure_control",
]

logger = logging.getLogger("chaostoolkit")
EXTENSION_NAME = "chaosmem"


#: How many times the control tries to start an OOM watcher on one cgroup before it gives up.
WATCH_ATTEMPTS = 3


@dataclass
class _Run:
    id: str
    base: Path
    directory: Path
    configuration: Mapping[str, Any]
    specs: list[dict[str, Any]]
    recorder: Recorder
    watchers: dict[str, OomWatch] = field(default_factory=dict)
    watch_failures: dict[str, int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    phase: str = "method"
    interrupted: Interrupt | None = None
    interrupted_activity: str | None = None
    unnote: Callable[[], None] = field(default=lambda: None)
    #: Where each cgroup's count of this run starts (:mod:`chaosmem.targets.oombase`), shared
    #: with the probes and the timeline.
    kills: RunKills = field(init=False)

    def __post_init__(self) -> None:
        self.kills = kills_of_run(self.id, self.configuration, state=self.base)
        # NB: a service's cgroup is watched as soon as chaosmem makes it, before the service
        # runs (a kill inside start_service, or a service stopped in the activity that started
        # it, would otherwise come before the watch after the activity).
        self.kills.on_created.append(lambda _group: self.watch_targets())

    def mark(self, event: str, **fields: Any) -> None:
        """Note a moment on the timeline; a failing write (a full disk) is logged, not raised:
        nothing the recording does may keep the run from its restore."""
        try:
            self.recorder.mark(event, **fields)
        except (OSError, ValueError, ChaosmemError) as exc:
            # NB: not every Exception: Chaos Toolkit's SIGTERM handler raises InterruptExecution
            # wherever the main thread is, and that must reach Chaos Toolkit.
            logger.warning("chaosmem: could not record %s: %s", event, exc)

    def on_kill(self, kill: OomEvent) -> None:
        """Mark a kill; ``count`` is this run's kills in the target so far (a cgroup's from its
        baseline), ``kernel_count`` the kernel's counter when that differs."""
        counts: dict[str, Any] = {"count": kill.count}
        if kill.run_count is not None:
            counts = {"count": kill.run_count, "kernel_count": kill.count}
        self.mark(
            "oom-kill", **kill.detail, target=kill.target, cgroup=kill.cgroup, **counts, at=kill.at
        )

    def watch_targets(self) -> None:
        """Start an OOM watch on every target that can be resolved now (services appear during
        the method, so this is retried after each activity, at most :data:`WATCH_ATTEMPTS`
        times per target; background activities end on pool threads, hence the lock). A cgroup
        is watched through the kernel's notifications from the run's baseline (a cgroup made in
        this run counts from 0), pods through an API watch. A cgroup made again under a watched
        path is a new cgroup: the old watch takes its last look and a new one starts."""
        with self.lock:
            specs = list(self.specs)
        for spec in specs:
            try:
                target = resolve_target(spec, self.configuration)
            except ChaosmemError:
                if spec.get("type") == "cgroup" and isinstance(spec.get("path"), str):
                    self.kills.note_absent(spec["path"])  # one made later is this run's
                continue
            key = json.dumps(target.spec, sort_keys=True)
            stale: OomWatch | None = None
            with self.lock:
                old = self.watchers.get(key)
                if isinstance(old, OomWatcher) and _made_again(old.baseline, target):
                    stale = self.watchers.pop(key)
                    self.watch_failures.pop(key, None)
            if stale is not None:
                _guarded(stale.stop)
                _guarded(stale.check_now)
            with self.lock:
                if key in self.watchers or self.watch_failures.get(key, 0) >= WATCH_ATTEMPTS:
                    continue
                try:
                    if isinstance(target, Cgroup):
                        baseline = self.kills.baseline(target)
                        watch = target.watch_oom_kills(self.on_kill, spec=spec, baseline=baseline)
                    else:
                        watch = target.watch_oom_kills(self.on_kill, spec=spec)
                    self.watchers[key] = watch
                except (ChaosmemError, OSError) as exc:
                    self.watch_failures[key] = failures = self.watch_failures.get(key, 0) + 1
                    level = logging.WARNING if failures == WATCH_ATTEMPTS else logging.DEBUG
                    logger.log(
                        level,
                        "chaosmem: cannot watch %s for OOM kills (attempt %d of %d): %s",
                        target.describe(), failures, WATCH_ATTEMPTS, exc,
                    )  # fmt: skip

    def finish(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Restore first, then tidy up; returns (restored, timeline).

        The restore comes first and runs whatever the watches or the recorder do (raise, block)
        afterwards: a cgroup's OOM counter is only *read* before it (a service's cgroup is gone
        after it), and the kills it shows are recorded in the last look. Every wait is bounded.
        Safe to call again: a second call restores what the first could not reach and finds
        nothing left to tidy.
        """
        with self.lock:
            watchers = list(self.watchers.values())
        counts = [_quietly(w.count_now) if isinstance(w, OomWatcher) else None for w in watchers]
        try:
            restored = self._restore()
        finally:
            timeline = self._tidy(watchers, counts)
        return restored, timeline

    def _restore(self) -> list[dict[str, Any]]:
        steps = rollback(self.base, run=self.id, configuration=self.configuration)
        for step in steps:
            if step.ok:
                logger.info("chaosmem: %s", step.done)
            else:
                logger.error("chaosmem: could not undo %s: %s", step.entry.describe(), step.error)
        return [
            {"kind": s.entry.kind, "target": s.entry.target, "done": s.done, "error": s.error}
            for s in steps
        ]

    def _tidy(self, watchers: list[OomWatch], counts: list[int | None]) -> list[dict[str, Any]]:
        """The last look and the end of the watches and the recorder; never raises.

        A cgroup watcher's thread stops first, then it takes its last look (with the count read
        before the restore). A pod watch takes its last look and stops only after the
        recorder's last sample, which reads it.
        """
        with self.lock:
            self.watchers.clear()
        for watcher, count in zip(watchers, counts, strict=True):
            if isinstance(watcher, OomWatcher):
                _guarded(watcher.stop)
                _guarded(functools.partial(watcher.check_now, at_least=count))
            else:
                _guarded(watcher.check_now)
        try:
            timeline = self.recorder.stop()
        except Exception as exc:
            logger.warning("chaosmem: the timeline could not be closed: %s", exc)
            timeline = []
        for watcher in watchers:
            if not isinstance(watcher, OomWatcher):
                _guarded(watcher.stop)
        forget_run(self.id)
        return timeline


def _made_again(watched: Baseline, target: object) -> bool:
    """Whether the cgroup at a watched path is another one than the watch follows (removed and
    made again under the same name)."""
    if not isinstance(target, Cgroup):
        return False
    try:
        info = os.stat(target.path)
    except OSError:
        return False  # gone: the watch ends by itself
    return (info.st_dev, info.st_ino) != watched.identity


def _guarded(step: Callable[[], object]) -> None:
    try:
        step()
    except Exception as exc:
        logger.warning("chaosmem: ending an OOM watch: %s", exc)


def _nothing() -> None:
    pass


def _quietly(read: Callable[[], int | None]) -> int | None:
    try:
        return read()
    except Exception:
        return None


_current: _Run | None = None


def _targets_in(
    experiment: Mapping[str, Any], configuration: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Every distinct target spec the experiment names (in arguments or configuration)."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> Iterator[Any]:
        if isinstance(node, Mapping):
            if isinstance(node.get("target"), Mapping):
                yield node["target"]
            if node.get("func") == "start_service" and isinstance(node.get("arguments"), Mapping):
                name = node["arguments"].get("name")
                if isinstance(name, str):
                    yield {"type": "service", "name": name}
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    default = (configuration or {}).get("chaosmem_target")
    candidates = (
        [default, *walk(experiment)] if isinstance(default, Mapping) else list(walk(experiment))
    )
    for spec in candidates:
        if spec.get("type") in TARGET_TYPES and dict(spec) not in found:
            found.append(dict(spec))
    return found


def configure_control(
    configuration: Configuration = None,
    secrets: Secrets = None,
    settings: Any = None,
    experiment: Experiment = None,
    **arguments: Any,
) -> None:
    """Nothing to set up before the run: everything starts with the experiment."""


def before_experiment_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **arguments: Any,
) -> None:
    """Start the run; a control that cannot start says why at error level and interrupts the run
    (Chaos Toolkit logs a failing control only at debug level and would run on without it)."""
    try:
        _begin(context, configuration, secrets, arguments)
    except InterruptExecution:
        raise
    except Exception as exc:
        logger.error("chaosmem: the control could not start: %s", exc)
        raise InterruptExecution(f"chaosmem control: {exc}") from None


def _begin(
    context: Experiment,
    configuration: Configuration,
    secrets: Secrets,
    arguments: dict[str, Any],
) -> None:
    global _current
    take_interrupts()  # NB: what stopped an earlier run in this process is not this run's
    try:
        go_arg = arguments.get("go")
        if parse_queries(arguments.get("prometheus_queries")):
            settings_from(configuration, secrets)  # the server the queries need, checked now
    except ChaosmemError as exc:
        raise InterruptExecution(f"chaosmem control: {exc}") from None
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    base = state_dir(configuration)
    directory = private_dir(base / "runs" / run_id)
    set_current_run(run_id)
    config = dict(configuration or {})
    specs: list[dict[str, Any]] = []
    for spec in _targets_in(context, configuration) + _fixture_targets(arguments.get("services")):
        if spec not in specs:
            specs.append(spec)
    recorder = Recorder(
        directory=directory,
        interval=parse_duration(arguments.get("interval", "1s"), name="interval", minimum=0.05),
        targets=specs,
        configuration=config,
        extra={
            "go": go_arg,
            "prometheus_queries": arguments.get("prometheus_queries"),
            "secrets": secrets,
        },
    )
    try:
        parse_go_argument(go_arg, specs)
    except ChaosmemError as exc:
        raise InterruptExecution(f"chaosmem control: {exc}") from None
    _current = _Run(run_id, base, directory, config, specs, recorder)
    recorder.start()
    _current.mark("experiment-start", title=context.get("title"))
    logger.info("chaosmem: run %s, state in %s", run_id, base)
    _start_fixtures(_current, arguments.get("services"), configuration)
    _current.watch_targets()


def _fixture_targets(services: object) -> list[dict[str, Any]]:
    """The targets the control's service fixtures will become (known before they start)."""
    if not isinstance(services, list):
        return []
    return [
        {"type": "service", "name": spec["name"]}
        for spec in services
        if isinstance(spec, dict) and isinstance(spec.get("name"), str)
    ]


def _start_fixtures(run: _Run, services: object, configuration: Configuration) -> None:
    """Start the control's ``services`` before the steady-state hypothesis probes them.

    Chaos Toolkit has no set-up phase, so a service the hypothesis checks must already run
    when the experiment starts. A fixture that cannot start interrupts the run (Chaos Toolkit
    would otherwise log a failed control at debug level and carry on without it).
    """
    if services is None:
        return
    try:
        if not isinstance(services, list):
            raise InvalidArgument("services", services, "a list of start_service argument objects")
        for index, spec in enumerate(services):
            if not isinstance(spec, dict):
                raise InvalidArgument(
                    f"services[{index}]", spec, "an object of start_service arguments"
                )
            result = start_service(**spec, configuration=configuration)
            run.mark(
                "service-start", name=result["name"], pid=result["pid"], cgroup=result["cgroup"]
            )
    except (ChaosmemError, TypeError) as exc:
        logger.error("chaosmem: a service of the control could not start: %s", exc)
        raise InterruptExecution(f"chaosmem control: {exc}") from None


def before_activity_control(context: dict[str, Any], **arguments: Any) -> None:
    """Note the activity's start, and every signal that arrives while it runs (any activity:
    Chaos Toolkit's provider turns the interrupt into a failed activity and would carry on)."""
    run = _current
    if run is not None:
        run.mark("activity-start", name=context.get("name"), activity_type=context.get("type"))
        if threading.current_thread() is threading.main_thread():
            run.unnote()
            run.unnote = note_signals(work=str(context.get("name")))


def after_activity_control(context: dict[str, Any], state: Any = None, **arguments: Any) -> None:
    """Note the activity's end; when a signal stopped it (:mod:`chaosmem.interrupts`), end the
    run here: Chaos Toolkit's provider has turned the interrupt into a failed activity and would
    go on with the next one."""
    run = _current
    if run is None:
        return
    status = state.get("status") if isinstance(state, Mapping) else None
    name = context.get("name")
    caught: list[Interrupt] = []
    try:
        run.mark("activity-end", name=name, activity_type=context.get("type"), status=status)
        try:
            run.watch_targets()
        except (ChaosmemError, OSError) as exc:
            logger.warning("chaosmem: watching the targets for OOM kills failed: %s", exc)
    finally:
        # NB: signals are handled on the main thread only, where foreground activities run; a
        # background activity ending on a pool thread must not take the interrupt of another.
        # The note comes off last: a signal while this function ran is still this activity's.
        if threading.current_thread() is threading.main_thread():
            run.unnote()
            run.unnote = _nothing
            caught = take_interrupts()
        if caught and run.interrupted is None:
            run.interrupted, run.interrupted_activity = caught[0], str(name)
    if not caught:
        return
    first = caught[0]
    run.mark("interrupted", signal=first.signal, activity=name, work=first.work)
    if run.phase != "rollback":  # NB: raised from a rollback it would skip the journal's end
        raise InterruptExecution(f"chaosmem: {first.signal} stopped {name!r}; ending the run")


def before_rollback_control(context: Any = None, **arguments: Any) -> None:
    if _current is not None:
        _current.phase = "rollback"


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    configuration: Configuration = None,
    **arguments: Any,
) -> None:
    """Restore everything the run left changed and add what happened to the journal.

    The run stays reachable (for :func:`cleanup_control`) until its restore has run."""
    global _current
    run = _current
    if run is None:
        return
    if threading.current_thread() is threading.main_thread():
        run.unnote()
        run.unnote = _nothing
    guard = tripped()  # chaostoolkit-addons' safeguard that stopped the run, if one did
    try:
        with holding_exits():
            if guard:
                run.mark("safeguard", **guard)
            run.mark(
                "experiment-end",
                status=state.get("status") if isinstance(state, Mapping) else None,
            )
            restored, timeline = run.finish()
        _current = None
    except Exception as exc:
        # NB: Chaos Toolkit would log this at debug level only; cleanup_control tries again.
        logger.error(
            "chaosmem: the restore of run %s failed (%s); trying again at cleanup", run.id, exc
        )
        return
    finally:
        set_current_run(None)
    late = take_interrupts()
    if run.interrupted is None and late:
        run.interrupted, run.interrupted_activity = late[0], None
    if isinstance(state, dict):
        marks = [r for r in timeline if r.get("kind") == "mark"]
        extension: dict[str, Any] = {
            "name": EXTENSION_NAME,
            "run": run.id,
            "state_dir": str(run.base),
            "targets": run.specs,
            "timeline": timeline,
            "oom_kills": [m for m in marks if m["event"] == "oom-kill"],
            "restored": restored,
            "safeguard": guard,
        }
        if run.interrupted is not None:
            # NB: whatever Chaos Toolkit made of it, a signal ended this run: the gate fails it.
            state["status"] = "interrupted"
            extension["interrupted"] = {
                "signal": run.interrupted.signal,
                "activity": run.interrupted_activity,
                "work": run.interrupted.work,
                "at": run.interrupted.at,
            }
        state.setdefault("extensions", []).append(extension)


def cleanup_control(**arguments: Any) -> None:
    """Last resort: if the run ended without ``after_experiment_control`` (an error inside Chaos
    Toolkit itself), restore here."""
    global _current
    run = _current
    if run is not None:
        try:
            with holding_exits():
                run.finish()
            _current = None
        finally:
            set_current_run(None)
