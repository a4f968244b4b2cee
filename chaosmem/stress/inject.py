"""Inject allocation stress into a local cgroup, and stop it: the work behind the stress actions.

Each worker is one stressor: written to the ledger (kind ``stressor``) before its first engine
starts, started inside the target's cgroup so its pages are charged there from the first one,
and given a deadline of ramp + hold + :data:`GRACE` when it has a hold. ``size`` and
``growth_rate`` are totals: with several workers each takes an equal share, so the target sees
the asked size and slope either way.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.interrupts import wait_for_all
from chaosmem.ledger import Ledger, current_run
from chaosmem.stress.engine import PAGE, plan_blocks
from chaosmem.stress.status import status_path
from chaosmem.stress.stopping import STRESSOR_KIND, open_stressors, stop_entry
from chaosmem.stress.supervisor import EngineSpec, Supervisor
from chaosmem.targets.cgroup import Cgroup
from chaosmem.units import MAX_DURATION, format_duration, format_size

__all__ = ["GRACE", "StressRequest", "check_size", "inject", "stop"]

#: How long a stressor may run past ramp + hold before its own deadline ends it.
GRACE = 30.0


@dataclass(frozen=True)
class StressRequest:
    """A validated request, in bytes, bytes per second and seconds."""

    size: int
    rate: float | None
    fragmentation: float
    hold: float | None
    release: str
    workers: int
    wait: bool
    respawn: bool
    detach: bool

    def plan(self) -> dict[str, Any]:
        """The plan as every result reports it, local or in pods: what was asked, and the ramp
        and hold the engines were given."""
        spec = self.engine_specs()[0]
        return {
            "size": self.size,
            "growth_rate": self.rate,
            "ramp_seconds": round(spec.ramp_seconds, 3),
            "hold": spec.hold,
            "release": self.release,
        }

    def engine_specs(self) -> list[EngineSpec]:
        base, extra = divmod(-(-self.size // PAGE), self.workers)  # pages per worker
        rate = self.rate / self.workers if self.rate else None
        hold = self.hold if self.hold is not None or not self.wait else 0.0
        return [
            EngineSpec(
                (base + (1 if i < extra else 0)) * PAGE,
                rate,
                self.fragmentation,
                hold,
                self.release,
            )
            for i in range(self.workers)
        ]


def check_size(
    size: int,
    *,
    value: object,
    limit: int | None,
    host: int | None,
    rate: float | None,
    allow_above_host: bool,
    own_cgroup: bool = False,
    allow_oom: bool = False,
    name: str = "size",
) -> None:
    """The checks every way of starting stress applies (the action and ``chaosmem stress``).

    * Above the host's memory with no limit below it: the kernel would OOM-kill anywhere on the
      host, so it must be asked for (``allow_above_host``).
    * In the caller's own cgroup (the foreground command), above its limit: the kernel would
      OOM-kill the caller's session, so it must be asked for (``allow_oom``). In a target's
      cgroup, going past the limit is the experiment and needs no flag.
    * A ramp longer than :data:`~chaosmem.units.MAX_DURATION` is a typo (a rate in bytes
      instead of MiB), not a plan.
    """
    unbounded = limit is None or (host is not None and limit >= host)
    if host is not None and size >= host and unbounded and not allow_above_host:
        raise InvalidArgument(
            name,
            value,
            f"less than the host's memory ({format_size(host)}) when the target has no "
            "limit below it: otherwise the kernel OOM-kills anywhere on the host "
            "(allow_above_host=true to mean it)",
        )
    if own_cgroup and limit is not None and size > limit and not allow_oom:
        raise InvalidArgument(
            name,
            value,
            f"at most the limit of chaosmem's own cgroup ({format_size(limit)}): above it the "
            "kernel OOM-kills in the caller's own session (--allow-oom to mean it, or use "
            "--target with a child cgroup)",
        )
    if rate is not None and size / rate > MAX_DURATION:
        raise InvalidArgument(
            "growth_rate",
            rate,
            f"a rate that reaches {format_size(size)} within {MAX_DURATION:g}s "
            f"(this one takes {format_duration(size / rate)})",
        )


def _plan(spec: EngineSpec) -> dict[str, Any]:
    return plan_blocks(spec.size, fragmentation=spec.fragmentation).summary()


def inject(target: Cgroup, request: StressRequest, *, directory: Path) -> dict[str, Any]:
    """Start the stressors; with ``wait`` block until they end and report what they reached."""
    target.check_changeable()
    ledger = Ledger(directory)
    specs = request.engine_specs()
    kills_before = target.oom_kill_count()
    group = uuid.uuid4().hex[:12]
    supervisors: list[Supervisor] = []
    try:
        for index, spec in enumerate(specs):
            stressor_id = group if len(specs) == 1 else f"{group}-{index}"
            status = status_path(directory, stressor_id)
            entry = ledger.record(
                kind=STRESSOR_KIND,
                target=target.spec,
                undo={
                    "id": stressor_id,
                    "cgroup": str(target.path),
                    "status": str(status),
                    "detach": request.detach,
                },
            )
            # NB: respawns keep the pressure on for ramp + hold; the grace is only for the engine
            # that is running when that window closes to finish on its own.
            window = None if spec.hold is None else time.monotonic() + spec.ramp_seconds + spec.hold
            deadline = None if window is None else window + GRACE
            supervisor = Supervisor(
                stressor_id=stressor_id, group=target, spec=spec, status=status, ledger=ledger, entry=entry,
                target=target.spec, respawn=request.respawn, detach=request.detach, deadline=deadline,
                respawn_until=window,
            )  # fmt: skip
            supervisor.start()
            supervisors.append(supervisor)
        if request.wait:
            wait_for_all(supervisors, stop=Supervisor.stop, work="inject_allocation_stress")
    except BaseException:
        for supervisor in supervisors:
            supervisor.stop()
        raise
    return _report(target, request, specs, supervisors, kills_before)


def _report(
    target: Cgroup,
    request: StressRequest,
    specs: list[EngineSpec],
    supervisors: list[Supervisor],
    kills_before: int,
) -> dict[str, Any]:
    results = [s.result() for s in supervisors]
    spec = specs[0]
    ramp = format_duration(spec.ramp_seconds) if spec.rate else "at once"
    hold = "until stopped" if spec.hold is None else format_duration(spec.hold)
    report: dict[str, Any] = {
        "target": target.spec,
        "cgroup": str(target.path),
        "stressors": results,
        "pids": [pid for r in results for pid in r["pids"]],
        "plan": {
            **request.plan(),
            "workers": request.workers,
            "blocks": [_plan(s) for s in specs],
        },
        "summary": f"{request.workers} stressor(s) allocating {format_size(request.size)} in {target.path}, "
        f"ramp {ramp}, hold {hold}",
    }
    if request.wait:
        try:
            kills_after: int | None = target.oom_kill_count()
        except ChaosmemError:
            kills_after = None
        report.update(
            bytes=sum(r["bytes"] for r in results),
            seconds=max((r["seconds"] for r in results), default=0.0),
            oom_killed=any(r["oom_killed"] for r in results),
            kills=sum(r["kills"] for r in results),
            oom_kills_before=kills_before,
            oom_kills_after=kills_after,
            outcomes=sorted({r["outcome"] for r in results}),
        )
        report["summary"] += (
            f": reached {format_size(report['bytes'])} in {report['seconds']}s, "
            f"{report['kills']} OOM kill(s) of the stressor"
        )
    return report


def stop(directory: Path, *, target: Cgroup | None, grace: float = 1.0) -> dict[str, Any]:
    """End the open stressors of this run (every open one outside a run), of ``target`` only
    when given. Harmless when there is none."""
    ledger = Ledger(directory)
    entries = open_stressors(ledger, run=current_run())
    if target is not None:
        entries = [e for e in entries if e.undo.get("cgroup") == str(target.path)]
    stopped: list[dict[str, Any]] = []
    for entry in reversed(entries):
        pids = stop_entry(entry, grace=grace)
        if any(e.id == entry.id for e in ledger.read().open(kind=STRESSOR_KIND)):
            ledger.close(entry, "stopped")
        stopped.append({"id": entry.undo["id"], "cgroup": entry.undo.get("cgroup"), "pids": pids})
    pids = [p for s in stopped for p in s["pids"]]
    return {
        "stopped": stopped,
        "count": len(stopped),
        "pids": pids,
        "summary": f"stopped {len(stopped)} stressor(s), ended pids {pids}",
    }
