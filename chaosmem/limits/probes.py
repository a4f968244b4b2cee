"""Probes: a target's memory limit, usage and the kernel's OOM-kill count."""

from __future__ import annotations

from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.targets import resolve_target
from chaosmem.targets.oombase import run_kill_count

__all__ = ["memory_limit", "memory_usage", "oom_kill_count"]


def memory_limit(
    target: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int | None:
    """The target's memory limit in bytes; null when it has none."""
    return resolve_target(target, configuration).memory_limit()


def memory_usage(
    target: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """Bytes the target's memory cgroup is charged for now (page cache included, as the kernel counts)."""
    return resolve_target(target, configuration).memory_usage()


def oom_kill_count(
    target: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """How many processes the kernel has OOM-killed in the target's cgroup: during a run (the
    chaosmem control's), this run's kills (a cgroup chaosmem created in the run counts from its
    creation, one that existed before from the run's first look at it: see
    :mod:`chaosmem.targets.oombase`); outside a run, the kernel's count since the cgroup was
    created.

    Use it in a steady-state hypothesis with a tolerance such as ``0`` ("no OOM kill") or, to
    prove an experiment bit, compare it before and after the method.
    """
    return run_kill_count(resolve_target(target, configuration), configuration)
