"""Resize a container's memory limit in place (``pods/resize``) and read how the kubelet answered.

Kubernetes moved where it says so between versions; :func:`resize_outcome` reads all of them:

* 1.33+: the ``PodResizePending`` condition (reason ``Deferred``: the node may fit it later;
  ``Infeasible``: it never will) and ``PodResizeInProgress`` (reason ``Error`` with a message
  when the kubelet could not apply it, e.g. 1.34+ skipping a memory decrease while usage is
  above the new limit);
* 1.27-1.32: the string ``status.resize`` (``Proposed``, ``InProgress``, ``Deferred``,
  ``Infeasible``);
* success everywhere: ``containerStatuses[].resources.limits.memory`` equals what was asked.

A container whose memory ``resizePolicy`` is ``RestartContainer`` is restarted to take the new
limit: its ``restartCount`` rises without an OOM kill; that is reported, never counted as one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.kube.client import Api, KubeError, NotFound
from chaosmem.targets import LimitRefused
from chaosmem.units import parse_size

__all__ = [
    "ANNOTATION",
    "NoResizeSubresource",
    "ResizeOutcome",
    "container_of",
    "format_quantity",
    "limit_of",
    "resize_outcome",
    "resize_pod",
]

#: Where each object keeps the limits chaosmem replaced: ``{"<container>": "1Gi" | null}``, so
#: anyone can restore them without chaosmem's state dir.
ANNOTATION = "chaosmem.io/original-limits"
SETTLED = {"applied", "deferred", "infeasible", "error"}


class NoResizeSubresource(LimitRefused):
    """The cluster has no ``pods/resize`` (Kubernetes < 1.32, or the feature gate is off):
    nothing changed."""


def format_quantity(size: int | None) -> str | None:
    """Bytes as the quantity a person would write (``512Mi``), exact."""
    if size is None:
        return None
    for suffix, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % factor == 0 and size >= factor:
            return f"{size // factor}{suffix}"
    return str(size)


def container_of(obj: dict[str, Any], name: str, *, where: str) -> dict[str, Any]:
    """The container ``name`` of a pod spec (``spec``) or template spec, or :class:`NotFound`."""
    containers = obj.get("containers") or []
    for container in containers:
        if container.get("name") == name:
            return dict(container)
    names = ", ".join(str(c.get("name")) for c in containers) or "none"
    raise NotFound(f"container {name!r} is not in {where} (its containers: {names})")


def limit_of(container: dict[str, Any]) -> str | None:
    """A container's memory limit as written (``"1Gi"``), or None."""
    value = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return str(value) if value is not None else None


def _status(pod: dict[str, Any], container: str) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return dict(status)
    return {}


def _bytes(quantity: object) -> int | None:
    if quantity is None:
        return None
    try:
        return parse_size(quantity, name="memory")
    except ChaosmemError:
        return None


@dataclass(frozen=True)
class ResizeOutcome:
    """How one pod's resize stands: ``pending``, ``applied``, ``deferred``, ``infeasible``,
    ``error``; ``detail`` in words; ``restarted`` when the container restarted to apply it."""

    pod: str
    outcome: str
    detail: str
    restarted: bool = False

    @property
    def settled(self) -> bool:
        return self.outcome in SETTLED

    def row(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "outcome": self.outcome,
            "detail": self.detail,
            "restarted": self.restarted,
        }


def resize_outcome(
    pod: dict[str, Any],
    container: str,
    wanted: str | None,
    *,
    restarts_before: int | None = None,
    decrease: bool = False,
) -> ResizeOutcome:
    """Read the kubelet's answer to a resize of ``container`` to ``wanted`` from a pod body."""
    meta = pod.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    conditions = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    pending = conditions.get("PodResizePending")
    if pending and pending.get("status") == "True":
        reason = str(pending.get("reason") or "")
        message = str(pending.get("message") or "")
        if reason == "Infeasible":
            return ResizeOutcome(
                name, "infeasible", f"the node can never fit this resize: {message}".rstrip(": ")
            )
        return ResizeOutcome(
            name,
            "deferred",
            f"the kubelet deferred the resize (the node cannot fit it now; it retries): {message}".rstrip(
                ": "
            ),
        )
    progress = conditions.get("PodResizeInProgress")
    if progress and progress.get("status") == "True" and progress.get("reason") == "Error":
        message = str(progress.get("message") or "")
        why = (
            " (a memory decrease is not applied while the container uses more than the new limit)"
            if decrease
            else ""
        )
        return ResizeOutcome(
            name, "error", f"the kubelet could not apply the resize{why}: {message}"
        )
    legacy = (pod.get("status") or {}).get("resize")
    if legacy in {"Deferred", "Infeasible"}:
        return ResizeOutcome(
            name, legacy.lower(), f"status.resize is {legacy!r} (a cluster older than 1.33)"
        )
    status = _status(pod, container)
    actual = ((status.get("resources") or {}).get("limits") or {}).get("memory")
    restarted = (
        restarts_before is not None
        and int(status.get("restartCount") or 0) > restarts_before
        and ((status.get("lastState") or {}).get("terminated") or {}).get("reason") != "OOMKilled"
    )
    if _bytes(actual) == _bytes(wanted) and not (progress and progress.get("status") == "True"):
        if restarted:
            detail = (
                "applied by restarting the container (memory resizePolicy RestartContainer): "
                "its restartCount rose, which is not an OOM kill"
            )
        elif decrease:
            detail = (
                "lowered in place without a restart (memory resizePolicy NotRequired: "
                "Kubernetes 1.34+ allows this while usage is below the new limit)"
            )
        else:
            detail = "applied in place"
        return ResizeOutcome(name, "applied", detail, restarted)
    return ResizeOutcome(
        name,
        "pending",
        f"waiting for the kubelet (containerStatuses shows {actual or 'no limit'}, asked {wanted or 'no limit'})",
    )


def _refusal_words(message: str) -> str:
    if "cannot be decreased" in message:
        return (
            "; Kubernetes 1.33 refuses memory-limit decreases when the container's memory "
            "resizePolicy is NotRequired (1.34+ allows them): set resizePolicy "
            'RestartContainer for memory, or use "mode": "rollout"'
        )
    return ""


def resize_pod(api: Api, namespace: str, pod: str, container: str, limit: str | None) -> None:
    """PATCH ``pods/resize``: a strategic merge of this one container's memory limit.

    Raises :class:`LimitRefused` when the API server refused it (422: nothing changed),
    :class:`NoResizeSubresource` when the cluster has no such subresource.
    """
    body = {
        "spec": {"containers": [{"name": container, "resources": {"limits": {"memory": limit}}}]}
    }
    what = f"resize of pod {namespace}/{pod} container {container!r}"
    try:
        api.call(api.core.patch_namespaced_pod_resize, pod, namespace, body, what=what)
    except NotFound as exc:
        # NB: the pod was just read; a 404 without the pod's own NotFound details is the
        # subresource missing (a real API server says "could not find the requested resource").
        if f'pods "{pod}" not found' in str(exc):
            raise
        raise NoResizeSubresource(
            f"{what}: this cluster has no pods/resize subresource (Kubernetes < 1.32, or "
            'InPlacePodVerticalScaling is off); set "mode": "rollout" in the target to patch '
            "the owning Deployment's pod template instead"
        ) from None
    except KubeError as exc:
        if exc.status in {400, 403, 409, 422}:
            raise LimitRefused(f"{exc}{_refusal_words(str(exc))}") from None
        raise


def original_annotation(meta: dict[str, Any]) -> dict[str, str | None]:
    """The ``chaosmem.io/original-limits`` annotation of an object, parsed (empty when absent)."""
    raw = (meta.get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(parsed, dict) or len(raw) > 65536:
        return {}
    return {str(k): (str(v) if v is not None else None) for k, v in parsed.items()}
