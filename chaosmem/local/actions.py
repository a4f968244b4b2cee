"""Actions: start a service in a memory cgroup of its own, and stop it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import InvalidArgument
from chaosmem.local import service
from chaosmem.state import state_dir
from chaosmem.targets.placement import ROOT_KEY, placement_for, release
from chaosmem.units import parse_duration, parse_size
from chaosmem.validate import check_env, check_name, check_str, check_url

__all__ = ["ROOT_KEY", "start_service", "stop_service"]

#: From 4Ei up the kernel reads a limit back as "unlimited" (see Cgroup.max_limit).
MAX_CGROUP_LIMIT = (1 << 62) - 4096


def _argv(command: object) -> list[str]:
    if isinstance(command, str) and command.strip():
        return shlex.split(command)
    if isinstance(command, list) and command and all(isinstance(a, str) and a for a in command):
        return list(command)
    raise InvalidArgument(
        "command", command, "a command line string or a non-empty list of strings"
    )


def start_service(
    name: str,
    command: str | list[str],
    memory_limit: str | int | None = None,
    env: dict[str, Any] | None = None,
    ready_url: str | None = None,
    ready_timeout: str | float = "30s",
    cwd: str | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Start ``command`` inside a new child memory cgroup, optionally under ``memory_limit``, and
    wait until ``ready_url`` answers (a status below 500).

    The cgroup is created under ``configuration["chaosmem_cgroup_root"]``, else where
    :mod:`chaosmem.targets.placement` finds chaosmem may create children (cgroup v1: under the
    caller's own memory cgroup; v2: in a ``chaosmem`` sub-tree of the nearest ancestor that may
    delegate memory); one log line says where and why. ``env`` adds variables (e.g. ``GOGC``, ``GOMEMLIMIT`` to move a Go
    service's GC trigger point). Afterwards the service is the target ``{"type": "service",
    "name": name}``; its pid is in the returned ``pidfile``. It is recorded in the ledger, so
    ``stop_service``, the control and ``chaosmem rollback`` all end it.
    """
    spec = service.ServiceSpec(
        name=check_name(name, name="name"),
        argv=_argv(command),
        memory_limit=parse_size(
            memory_limit, name="memory_limit", minimum=4096, maximum=MAX_CGROUP_LIMIT
        )
        if memory_limit is not None
        else None,
        env=check_env(env, name="env"),
        ready_url=check_url(ready_url, name="ready_url") if ready_url is not None else None,
        ready_timeout=parse_duration(ready_timeout, name="ready_timeout", minimum=0.1),
        cwd=check_str(cwd, name="cwd") if cwd is not None else None,
    )
    if spec.cwd is not None and not Path(spec.cwd).is_dir():
        raise InvalidArgument("cwd", cwd, "an existing directory")
    directory = state_dir(configuration)
    parent, placement = placement_for(configuration)
    subtree = parent.path if placement.owned else None
    try:
        return service.start(spec, parent=parent, directory=directory, subtree=subtree)
    except BaseException:
        if subtree is not None:
            release(subtree)  # only when empty: another service may live there
        raise


def stop_service(
    name: str,
    grace: str | float = "5s",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """End every process of the service (SIGTERM, then SIGKILL after ``grace``) and remove its cgroup.

    Returns the pids it ended and the OOM kills the cgroup saw.
    """
    return service.stop(
        check_name(name, name="name"),
        directory=state_dir(configuration),
        grace=parse_duration(grace, name="grace"),
    )
