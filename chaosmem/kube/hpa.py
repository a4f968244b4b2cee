"""How fast a HorizontalPodAutoscaler reacted: when it scaled up, and when the new pods were Ready.

Times come from the cluster's own records, not from when we happened to look: the HPA's
``status.lastScaleTime`` and its ``AbleToScale`` condition with reason ``SucceededRescale``
(whichever is later), and each pod's ``Ready`` condition ``lastTransitionTime``.
"""

from __future__ import annotations

import time
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.interrupts import StopRequest, stop_on_signals
from chaosmem.kube.client import Api, NotFound
from chaosmem.timestamps import iso_seconds

__all__ = ["reaction_time", "read_replicas", "scaled_at"]

_POLL = 1.0


def read_hpa(api: Api, namespace: str, name: str) -> dict[str, Any]:
    try:
        body: dict[str, Any] = api.call(
            api.autoscaling.read_namespaced_horizontal_pod_autoscaler,
            name,
            namespace,
            what=f"read horizontalpodautoscaler {namespace}/{name}",
        )
    except NotFound:
        raise NotFound(
            f"horizontalpodautoscaler {name!r} not found in namespace {namespace!r}"
        ) from None
    return body


def scaled_at(hpa: dict[str, Any], since: float) -> float | None:
    """When the HPA last rescaled, if at or after ``since``."""
    status = hpa.get("status") or {}
    times = [iso_seconds(status.get("lastScaleTime"))]
    for condition in status.get("conditions") or []:
        if condition.get("type") == "AbleToScale" and condition.get("reason") == "SucceededRescale":
            times.append(iso_seconds(condition.get("lastTransitionTime")))
    found = [t for t in times if t is not None and t >= since]
    return max(found) if found else None


def _target_pods(api: Api, namespace: str, hpa: dict[str, Any]) -> list[dict[str, Any]]:
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    if ref.get("kind") != "Deployment":
        raise ChaosmemError(
            f"horizontalpodautoscaler {namespace}/{hpa['metadata']['name']} scales a "
            f"{ref.get('kind')!r}; readiness is read for Deployments only"
        )
    deployment = api.call(
        api.apps.read_namespaced_deployment,
        ref["name"],
        namespace,
        what=f"read deployment {namespace}/{ref['name']}",
    )
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    body = api.call(
        api.core.list_namespaced_pod,
        namespace,
        label_selector=selector,
        what=f"list pods of deployment {namespace}/{ref['name']}",
    )
    return list(body.get("items") or [])


def _ready_times(pods: list[dict[str, Any]]) -> list[float]:
    times = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                at = iso_seconds(condition.get("lastTransitionTime"))
                if at is not None:
                    times.append(at)
    return sorted(times)


def read_replicas(api: Api, namespace: str, name: str) -> dict[str, int]:
    """The HPA's current and desired replicas, and how many of its target's pods are Ready."""
    hpa = read_hpa(api, namespace, name)
    status = hpa.get("status") or {}
    return {
        "current": int(status.get("currentReplicas") or 0),
        "desired": int(status.get("desiredReplicas") or 0),
        "ready": len(_ready_times(_target_pods(api, namespace, hpa))),
    }


def reaction_time(
    api: Api, namespace: str, name: str, *, since: float, timeout: float, until: str
) -> float | None:
    """Seconds from ``since`` until the HPA rescaled (``until="scaled"``) and, with
    ``until="ready"``, its target has ``desiredReplicas`` Ready pods; None when that did not
    happen within ``timeout`` seconds of ``since``."""
    deadline = since + timeout
    stopping = StopRequest()
    with stop_on_signals(stopping.set, work="waiting for the autoscaler"):
        while True:
            hpa = read_hpa(api, namespace, name)
            scaled = scaled_at(hpa, since)
            if scaled is not None and scaled <= deadline:
                if until == "scaled":
                    return round(scaled - since, 3)
                desired = int((hpa.get("status") or {}).get("desiredReplicas") or 0)
                ready = _ready_times(_target_pods(api, namespace, hpa))
                if desired and len(ready) >= desired and ready[desired - 1] <= deadline:
                    return round(max(scaled, ready[desired - 1]) - since, 3)
            if time.time() >= deadline:
                return None
            if stopping.wait(min(_POLL, max(0.0, deadline - time.time()))):
                raise ChaosmemError(
                    f"interrupted (SIGTERM/SIGINT) while waiting for HPA {namespace}/{name}"
                )
