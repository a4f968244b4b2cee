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

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from chaosmem.errors import ChaosmemError, InvalidArgument

__all__ = [
    "BACKENDS",
    "LIMIT_KINDS",
    "TARGET_TYPES",
    "Backend",
    "LimitChange",
    "LimitRefused",
    "MemoryTarget",
    "OomWatch",
    "backend_of",
    "resolve_target",
    "target_spec",
]

TARGET_KEY = "chaosmem_target"


@dataclass(frozen=True)
class Backend:
    """One backend: the target types it resolves, the ledger kind of its limit changes, and the
    modules that register its undo handlers.

    The modules are named, not imported: a backend whose dependencies are missing (no
    ``kubernetes`` client installed) must not stop the other backend's targets or rollbacks.
    """

    name: str
    types: tuple[str, ...]
    resolver: str  # "module:function" taking (spec, configuration, name=...)
    limit_kind: str
    handler_modules: tuple[str, ...]

    def resolve(
        self, spec: Mapping[str, Any], configuration: Mapping[str, Any] | None, *, name: str
    ) -> MemoryTarget:
        module, _, function = self.resolver.partition(":")
        try:
            loaded = importlib.import_module(module)
        except ImportError as exc:
            raise ChaosmemError(
                f"argument '{name}': target type {spec['type']!r} needs the {self.name} backend, "
                f"which cannot load here ({exc}); install chaosmem with its dependencies"
            ) from None
        resolver: Callable[..., MemoryTarget] = getattr(loaded, function)
        return resolver(spec, configuration, name=name)


#: Every backend, in one place: target types, ledger kinds and undo modules derive from it.
BACKENDS = (
    Backend(
        name="local",
        types=("cgroup", "process", "service"),
        resolver="chaosmem.targets.local:resolve_local",
        limit_kind="cgroup-limit",
        handler_modules=("chaosmem.targets.cgroup", "chaosmem.local.service"),
    ),
    Backend(
        name="kubernetes",
        types=("pod", "deployment"),
        resolver="chaosmem.targets.kubernetes:resolve_kube",
        limit_kind="pod-limit",
        handler_modules=("chaosmem.targets.kubernetes", "chaosmem.kube.stress"),
    ),
)
TARGET_TYPES = tuple(t for backend in BACKENDS for t in backend.types)
#: Ledger kinds that record a limit change, one per backend.
LIMIT_KINDS = tuple(backend.limit_kind for backend in BACKENDS)


def backend_of(kind: str) -> Backend:
    """The backend that resolves target type ``kind``."""
    for backend in BACKENDS:
        if kind in backend.types:
            return backend
    raise KeyError(kind)


class LimitRefused(ChaosmemError):
    """The backend refused the new limit outright: nothing changed (cgroup v1 EBUSY, an API
    server's 422). Only this closes the ledger entry as ``not-applied``; any other error (a
    timeout after the request may have landed) leaves it open so the undo still runs."""


@dataclass
class LimitChange:
    """What setting a limit did: ``applied`` (read back and equal), ``pending`` (accepted, not yet
    in effect: a pod resize the kubelet has still to act on) or ``refused``.

    ``wait`` blocks until a pending change settles or ``timeout`` seconds pass; ``outcome`` is
    the backend's word for how it ended (``applied``, ``deferred``, ``infeasible``, ``error``,
    ``timeout`` ...) and ``detail`` says it in a sentence; ``objects`` carries per-object detail
    (one row per pod).
    """

    state: Literal["applied", "pending", "refused"]
    outcome: str
    detail: str = ""
    objects: list[dict[str, Any]] | None = None
    waiter: Callable[[float], LimitChange] | None = None

    def wait(self, timeout: float) -> LimitChange:
        if self.state != "pending" or self.waiter is None:
            return self
        return self.waiter(timeout)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "outcome": self.outcome, "detail": self.detail}
        if self.objects is not None:
            out["objects"] = self.objects
        return out


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

    def limit_state(self) -> dict[str, Any]: ...

    def set_memory_limit(self, limit: int | None) -> LimitChange:
        """Ask for the new limit; raises :class:`LimitRefused` when nothing changed."""
        ...

    def check_changeable(self) -> None:
        """Raise when chaosmem must not change this target (it holds chaosmem itself)."""
        ...

    def watch_oom_kills(
        self, on_kill: Callable[[Any], None], *, spec: Mapping[str, Any]
    ) -> OomWatch:
        """Start recording every OOM kill from now on (the control does, for a run); ``on_kill``
        gets a :class:`chaosmem.targets.oomwatch.OomEvent` carrying ``spec``."""
        ...


class OomWatch(Protocol):
    """A running OOM-kill watch: a last look at the end, then stop."""

    def check_now(self) -> None: ...

    def stop(self) -> None: ...


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
    return backend_of(spec["type"]).resolve(spec, configuration, name=name)
