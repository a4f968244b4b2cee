"""Actions: inject allocation stress that grows at a chosen rate, and stop it."""

from __future__ import annotations

from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import InvalidArgument
from chaosmem.host import host_memory
from chaosmem.state import state_dir
from chaosmem.stress.engine import PAGE
from chaosmem.stress.inject import StressRequest, check_size, inject, stop
from chaosmem.targets import resolve_target
from chaosmem.targets.cgroup import Cgroup
from chaosmem.units import (
    parse_duration,
    parse_fraction,
    parse_rate,
    parse_size_or_percent,
)
from chaosmem.validate import check_bool, check_choice, check_int

__all__ = ["inject_allocation_stress", "stop_allocation_stress"]

RELEASES = ("all", "fragmented")
MAX_WORKERS = 64


def inject_allocation_stress(
    target: dict[str, Any] | None = None,
    size: str | int | None = None,
    growth_rate: str | float | None = None,
    fragmentation: float | str = 0.0,
    hold: str | float | None = None,
    workers: int = 1,
    wait: bool = False,
    respawn: bool = False,
    detach: bool = False,
    release: str = "all",
    allow_above_host: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Allocate ``size`` bytes inside the target's memory cgroup, growing at ``growth_rate``
    (e.g. "50Mi/s"; all at once when none), hold them for ``hold`` (until stopped when none),
    then release them.

    ``size`` is a size ("200Mi") or a share of the target's current limit ("90%"; refused when
    the target has no limit). ``fragmentation`` (0.0-1.0) is the share of bytes allocated in
    small blocks interleaved with large ones; ``release="fragmented"`` frees every other block
    of each size and keeps the rest until stopped or the stressor's deadline. Every page is
    touched, so it is resident and charged to the target from the first byte.

    Without ``wait`` it returns at once with the stressors' pids and plan; with ``wait`` it
    returns when they end (a missing ``hold`` then means release at once), with the bytes
    reached, the seconds taken and whether the kernel OOM-killed them: an OOM kill is a result,
    not a failure. ``respawn`` restarts a killed stressor to keep the pressure on, counting the
    kills, until its deadline. ``workers`` split the size and rate between processes.

    ``size`` at or above the host's memory on a target without a limit below it is refused
    unless ``allow_above_host`` (the kernel would OOM-kill anywhere on the host).

    Each stressor is recorded in the restore ledger; it ends at ramp + hold + 30s, when the
    process that started it dies (unless ``detach``), with ``stop_allocation_stress``, the
    chaosmem control or ``chaosmem rollback``.
    """
    rate = parse_rate(growth_rate, name="growth_rate") if growth_rate is not None else None
    share = parse_fraction(fragmentation, name="fragmentation")
    hold_s = parse_duration(hold, name="hold") if hold is not None else None
    count = check_int(workers, name="workers", minimum=1, maximum=MAX_WORKERS)
    waiting = check_bool(wait, name="wait")
    respawning = check_bool(respawn, name="respawn")
    detached = check_bool(detach, name="detach")
    mode = check_choice(release, name="release", choices=RELEASES)
    above_host = check_bool(allow_above_host, name="allow_above_host")
    if detached and respawning:
        raise InvalidArgument(
            "respawn", respawn, "false when detach is true (respawning needs the starting process)"
        )
    if detached and hold_s is None:
        raise InvalidArgument(
            "hold", hold, "a duration when detach is true (a detached stressor needs an end)"
        )
    if size is None:
        raise InvalidArgument(
            "size", size, "a size such as '200Mi' or a share of the target's limit such as '90%'"
        )
    resolved = resolve_target(target, configuration)
    resolved.check_changeable()
    limit = resolved.memory_limit()
    total = parse_size_or_percent(size, name="size", whole=limit, minimum=PAGE * count)
    local = isinstance(resolved, Cgroup)
    # NB: a pod's node memory is not known here; the ramp bound applies everywhere
    check_size(
        total,
        value=size,
        limit=limit,
        host=host_memory() if local else None,
        rate=rate,
        allow_above_host=above_host,
    )
    if not isinstance(resolved, Cgroup):  # a pod: the engine runs in its container, by exec
        from chaosmem.kube.stress import inject_in_pods

        request = StressRequest(
            total, rate, share, hold_s, mode, count, waiting, respawning, detached
        )
        return inject_in_pods(resolved, request, directory=state_dir(configuration))
    group = resolved
    request = StressRequest(total, rate, share, hold_s, mode, count, waiting, respawning, detached)
    return inject(group, request, directory=state_dir(configuration))


def stop_allocation_stress(
    target: dict[str, Any] | None = None,
    grace: str | float = "1s",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Stop the stressors of the target, or every stressor of the run when no target is given
    (``configuration["chaosmem_target"]`` is not used here: a bare call in a rollback stops them
    all). SIGTERM first, SIGKILL after ``grace``. Running it twice is harmless."""
    wait = parse_duration(grace, name="grace")
    resolved = resolve_target(target, configuration) if target is not None else None
    if resolved is not None and not isinstance(resolved, Cgroup):
        from chaosmem.kube.stress import stop_in_pods

        stopped = stop_in_pods(
            state_dir(configuration),
            target_spec=resolved.spec,
            configuration=configuration,
            grace=wait,
        )
        return {
            "stopped": stopped,
            "count": len(stopped),
            "summary": f"stopped {len(stopped)} in-pod stressor(s)",
        }
    result = stop(state_dir(configuration), target=resolved, grace=wait)
    if resolved is None:  # a bare call stops the run's in-pod stressors too
        try:
            from chaosmem.kube.stress import stop_in_pods
        except ImportError:  # no kubernetes client here: there can be no pod stressor either
            return result
        pods = stop_in_pods(
            state_dir(configuration), target_spec=None, configuration=configuration, grace=wait
        )
        result = {**result, "pods": pods, "count": result["count"] + len(pods)}
    return result
