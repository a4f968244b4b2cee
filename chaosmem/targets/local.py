"""Resolve the local target types (cgroup, process, service) to a :class:`Cgroup`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.ledger import Ledger
from chaosmem.state import state_dir
from chaosmem.targets.cgroup import Cgroup
from chaosmem.validate import check_int, check_keys, check_name, check_str

__all__ = ["SERVICE_KIND", "find_service", "resolve_local"]

SERVICE_KIND = "service"
_KEYS = {"cgroup": {"path"}, "process": {"pid", "pidfile"}, "service": {"name"}}


def _check_keys(spec: Mapping[str, Any], name: str) -> None:
    kind = spec["type"]
    check_keys(spec, _KEYS[kind] | {"type"}, name=name, what=f"a {kind} target")


def find_service(service: str, configuration: Mapping[str, Any] | None) -> Path | None:
    """The cgroup of the running service ``service``, from the ledger's open entries."""
    entries = Ledger(state_dir(configuration)).read().open(kind=SERVICE_KIND)
    for entry in reversed(entries):
        if entry.target.get("name") == service:
            return Path(entry.target["path"])
    return None


def _pid_from(spec: Mapping[str, Any], name: str) -> int:
    if ("pid" in spec) == ("pidfile" in spec):
        raise InvalidArgument(
            name, dict(spec), "a process target with exactly one of 'pid' or 'pidfile'"
        )
    if "pid" in spec:
        return check_int(spec["pid"], name=f"{name}.pid", minimum=1)
    pidfile = check_str(spec["pidfile"], name=f"{name}.pidfile")
    try:
        text = Path(pidfile).read_text().strip()
    except OSError as exc:
        raise InvalidArgument(
            f"{name}.pidfile", pidfile, f"a readable file holding a pid ({exc.strerror})"
        ) from None
    return check_int(text, name=f"{name}.pidfile", minimum=1)


def resolve_local(
    spec: Mapping[str, Any], configuration: Mapping[str, Any] | None, *, name: str
) -> Cgroup:
    _check_keys(spec, name)
    kind = spec["type"]
    try:
        if kind == "cgroup":
            path = check_str(spec.get("path"), name=f"{name}.path")
            if not os.path.isabs(path):
                raise InvalidArgument(
                    f"{name}.path", path, "an absolute path under the cgroup mount"
                )
            return Cgroup.at(path)
        if kind == "process":
            pid = _pid_from(spec, name)
            try:
                return Cgroup.of_process(pid)
            except ProcessLookupError:
                raise InvalidArgument(f"{name}.pid", pid, "the pid of a running process") from None
        service = check_name(spec.get("name"), name=f"{name}.name")
        found = find_service(service, configuration)
        if found is None:
            raise InvalidArgument(
                f"{name}.name",
                service,
                "the name of a service started with chaosmem.local.actions.start_service and not yet stopped",
            )
        return Cgroup.at(found)
    except InvalidArgument:
        raise
    except ChaosmemError as exc:
        raise InvalidArgument(name, dict(spec), f"a usable memory cgroup ({exc})") from None
