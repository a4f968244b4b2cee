"""One face for "a thing with a memory limit", whatever the backend.

Activities call :func:`resolve_target` with the experiment's ``target`` object and get a
:class:`MemoryTarget`; they never care whether a cgroup file or the Kubernetes API is behind it.
Target specs (public, experiment files depend on them)::

    {"type": "cgroup",  "path": "/sys/fs/cgroup/memory/.../orders"}
    {"type": "process", "pid": 1234}            # or "pidfile": "run/orders.pid"
    {"type": "service", "name": "orders"}       # a cgroup start_service created
    {"type": "pod", ...} / {"type": "deployment", ...}   # the kubernetes backend
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from chaosmem.errors import ChaosmemError, InvalidArgument

__all__ = ["TARGET_TYPES", "MemoryTarget", "resolve_target", "target_spec"]

TARGET_TYPES = ("cgroup", "process", "service", "pod", "deployment")
TARGET_KEY = "chaosmem_target"


class MemoryTarget(Protocol):
    """What every backend offers; limits are bytes, None meaning unlimited."""

    @property
    def limit_kind(self) -> str:
        """The ledger kind under which this backend records (and undoes) limit changes."""
        ...

    @property
    def spec(self) -> dict[str, Any]:
        """The concrete spec recorded in the ledger: enough to find the target again after a crash."""
        ...

    def describe(self) -> str: ...

    def memory_limit(self) -> int | None: ...

    def memory_usage(self) -> int: ...

    def oom_kill_count(self) -> int: ...

    def pids(self) -> list[int]: ...

    def limit_state(self) -> dict[str, Any]: ...

    def set_memory_limit(self, limit: int | None) -> None: ...

    def check_changeable(self) -> None:
        """Raise when chaosmem must not change this target (it holds chaosmem itself)."""
        ...


def target_spec(
    target: object, configuration: Mapping[str, Any] | None, *, name: str = "target"
) -> dict[str, Any]:
    """The target object to use: the argument, else ``configuration["chaosmem_target"]``."""
    spec = target if target is not None else (configuration or {}).get(TARGET_KEY)
    if spec is None:
        raise InvalidArgument(
            name,
            None,
            f'a target object such as {{"type": "service", "name": "orders"}} '
            f"(or configuration[{TARGET_KEY!r}])",
        )
    if not isinstance(spec, Mapping):
        raise InvalidArgument(name, spec, "a target object with a 'type'")
    kind = spec.get("type")
    if kind not in TARGET_TYPES:
        raise InvalidArgument(
            f"{name}.type", kind, "one of " + ", ".join(repr(t) for t in TARGET_TYPES)
        )
    return dict(spec)


def resolve_target(
    target: object, configuration: Mapping[str, Any] | None = None, *, name: str = "target"
) -> MemoryTarget:
    """Turn a target spec into a live :class:`MemoryTarget`, or raise a clear error."""
    spec = target_spec(target, configuration, name=name)
    if spec["type"] in {"cgroup", "process", "service"}:
        from chaosmem.targets.local import resolve_local

        return resolve_local(spec, configuration, name=name)
    raise ChaosmemError(
        f"argument '{name}': target type {spec['type']!r} needs the kubernetes backend, "
        "which this version of chaosmem does not include yet"
    )
