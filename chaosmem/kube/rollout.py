"""Change a Deployment's pod template limit and read how its rollout stands.

For clusters without ``pods/resize`` (``"mode": "rollout"``) and for deployment targets: the
new limit reaches the pods by replacing them, which restarts them, so the experiment measures
fresh pods under the new limit rather than running ones squeezed in place.
"""

from __future__ import annotations

from typing import Any

from chaosmem.kube.client import Api, KubeError
from chaosmem.kube.resize import ResizeOutcome
from chaosmem.targets import LimitRefused

__all__ = ["patch_template_limit", "rollout_outcome"]


def patch_template_limit(
    api: Api, namespace: str, name: str, container: str, limit: str | None
) -> None:
    """A strategic merge of one container's ``resources.limits.memory`` in the pod template."""
    body = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": container, "resources": {"limits": {"memory": limit}}}]
                }
            }
        }
    }
    what = f"patch deployment {namespace}/{name} container {container!r}"
    try:
        api.call(api.apps.patch_namespaced_deployment, name, namespace, body, what=what)
    except KubeError as exc:
        if exc.status in {400, 403, 409, 422}:
            raise LimitRefused(str(exc)) from None
        raise


def rollout_outcome(deployment: dict[str, Any]) -> ResizeOutcome:
    """``applied`` once the controller observed the new generation and every replica is updated
    and available; ``error`` when the rollout exceeded its progress deadline."""
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = f"{meta['namespace']}/{meta['name']}"
    replicas = int(spec.get("replicas", 1) or 0)
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return ResizeOutcome(
                name, "error", f"the rollout stalled: {condition.get('message', '')}"
            )
    if (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("availableReplicas") or 0) == replicas
        and int(status.get("replicas") or 0) == replicas
    ):
        return ResizeOutcome(name, "applied", f"rolled out to {replicas} replicas (pods restarted)")
    return ResizeOutcome(
        name,
        "pending",
        f"rolling out: {status.get('updatedReplicas', 0)}/{replicas} updated, "
        f"{status.get('availableReplicas', 0)} available",
    )
