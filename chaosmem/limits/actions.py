"""Actions: tighten a target's memory limit, and restore it from the ledger."""

from __future__ import annotations

from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import Ledger, current_run
from chaosmem.limits.change import restore_limits, tighten
from chaosmem.state import state_dir
from chaosmem.targets import resolve_target
from chaosmem.units import parse_fraction, parse_size
from chaosmem.validate import check_bool

__all__ = ["restore_memory_limit", "tighten_memory_limit"]


def tighten_memory_limit(
    target: dict[str, Any] | None = None,
    limit: str | int | None = None,
    fraction: float | str | None = None,
    allow_above_host: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Set the target's memory limit to ``limit`` (a size such as "512Mi"), or to ``fraction`` of
    its current limit (of its current usage when it has none), e.g. 0.5 or "50%".

    The previous limit is written to the restore ledger first; ``restore_memory_limit``, the
    chaosmem control and ``chaosmem rollback`` put it back. Returns ``before`` and ``after``
    (bytes, null when unlimited), ``usage`` and whether the new limit is ``below_usage``: then
    cgroup v1 refuses (the activity fails, nothing changes) and cgroup v2 OOM-kills.

    A limit the kernel cannot hold is refused, and so is one above the host's memory unless
    ``allow_above_host`` is true. The limit is read back after the write; when the kernel holds
    anything else (beyond rounding to a page) it is restored and the activity fails. A target
    another run has tightened and not yet restored is refused, naming that run.
    """
    if (limit is None) == (fraction is None):
        raise InvalidArgument("limit", limit, "exactly one of 'limit' or 'fraction'")
    size = parse_size(limit, name="limit", minimum=4096) if limit is not None else None
    share = (
        parse_fraction(fraction, name="fraction", open_low=True) if fraction is not None else None
    )
    above_host = check_bool(allow_above_host, name="allow_above_host")
    resolved = resolve_target(target, configuration)
    return tighten(
        resolved,
        Ledger(state_dir(configuration)),
        limit=size,
        fraction=share,
        allow_above_host=above_host,
    )


def restore_memory_limit(
    target: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Put back the limits the ledger recorded: the target's, or every open one when no target
    is given (``configuration["chaosmem_target"]`` is not used here, on purpose: a bare call in a
    rollback restores everything). Inside a run (the chaosmem control gives each run an id) only
    this run's changes are restored: another run's tightened limit is never undone under it;
    outside a run, every open one. A given target is resolved with the run's configuration, so a
    service target is found in ``chaosmem_state_dir``. Running it twice is harmless."""
    resolved = resolve_target(target, configuration) if target is not None else None
    restored = restore_limits(
        Ledger(state_dir(configuration)),
        target=resolved,
        run=current_run(),
        configuration=configuration,
    )
    return {"restored": restored, "count": len(restored)}
