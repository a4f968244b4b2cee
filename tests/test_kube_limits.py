"""Pod and deployment limits through the real ``kubernetes`` client, over HTTP, to the API double."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.kube.client import NotFound
from chaosmem.kube.resize import ANNOTATION
from chaosmem.ledger import Ledger
from chaosmem.limits.actions import restore_memory_limit, tighten_memory_limit
from chaosmem.limits.probes import memory_limit, memory_usage, oom_kill_count
from chaosmem.rollback import rollback
from chaosmem.targets import LimitRefused
from tests.kube_double import (
    KubeDouble,
    condition_reaction,
    legacy_status_reaction,
    make_pod,
    oom_kill,
)

SELECTOR = {
    "type": "pod",
    "namespace": "shop",
    "label_selector": "app=orders",
    "container": "orders",
}


def two_pods_and_a_stranger(kube: KubeDouble) -> None:
    """Two pods of app=orders (app + envoy sidecar) and one of another app with the same container name."""
    for name in ("orders-a", "orders-b"):
        kube.add_pod(
            make_pod(
                name,
                labels={"app": "orders", "tier": "web"},
                containers={"orders": "1Gi", "envoy": "256Mi"},
            )
        )
    kube.add_pod(make_pod("billing-a", labels={"app": "billing"}, containers={"orders": "1Gi"}))


def containers(kube: KubeDouble, pod: str) -> dict[str, Any]:
    spec = kube.pods[("shop", pod)]["spec"]["containers"]
    return {c["name"]: c["resources"].get("limits", {}).get("memory") for c in spec}


def test_tighten_patches_resize_of_every_matching_pod_for_that_container_only(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    two_pods_and_a_stranger(kube)
    result = tighten_memory_limit(SELECTOR, limit="512Mi", configuration=state)
    assert result["before"] == 1 << 30 and result["requested"] == 512 << 20
    assert result["after"] == 512 << 20
    assert result["change"]["outcome"] == "applied"
    resizes = kube.patches("/resize")
    assert sorted(r.path for r in resizes) == [
        "/api/v1/namespaces/shop/pods/orders-a/resize",
        "/api/v1/namespaces/shop/pods/orders-b/resize",
    ]
    for request in resizes:
        assert request.content_type == "application/strategic-merge-patch+json"
        assert request.body == {
            "spec": {
                "containers": [{"name": "orders", "resources": {"limits": {"memory": "512Mi"}}}]
            }
        }
    # the sidecar and the other app are as they were; the kubelet reports the new limit
    for pod in ("orders-a", "orders-b"):
        assert containers(kube, pod) == {"orders": "512Mi", "envoy": "256Mi"}
        status = kube.pods[("shop", pod)]["status"]["containerStatuses"][0]
        assert status["resources"]["limits"]["memory"] == "512Mi"
        note = json.loads(kube.pods[("shop", pod)]["metadata"]["annotations"][ANNOTATION])
        assert note == {"orders": "1Gi"}
    assert containers(kube, "billing-a") == {"orders": "1Gi"}
    entry = Ledger(Path(state["chaosmem_state_dir"])).read().open()[0]
    assert entry.kind == "pod-limit"
    assert [(o["name"], o["original"]) for o in entry.undo["objects"]] == [
        ("orders-a", "1Gi"),
        ("orders-b", "1Gi"),
    ]

    kube.requests.clear()
    restored = restore_memory_limit(SELECTOR, configuration=state)
    assert restored["count"] == 1
    for pod in ("orders-a", "orders-b"):
        assert containers(kube, pod) == {"orders": "1Gi", "envoy": "256Mi"}
        assert ANNOTATION not in kube.pods[("shop", pod)]["metadata"]["annotations"]
    assert sorted(r.path for r in kube.patches("/resize")) == [
        "/api/v1/namespaces/shop/pods/orders-a/resize",
        "/api/v1/namespaces/shop/pods/orders-b/resize",
    ]
    assert all(
        r.body["spec"]["containers"]
        == [{"name": "orders", "resources": {"limits": {"memory": "1Gi"}}}]
        for r in kube.patches("/resize")
    )
    assert restore_memory_limit(SELECTOR, configuration=state)["count"] == 0


def test_set_based_selector_and_qty(kube: KubeDouble, state: dict[str, Any]) -> None:
    two_pods_and_a_stranger(kube)
    spec = {**SELECTOR, "label_selector": "app in (orders),tier!=batch", "qty": 1}
    tighten_memory_limit(spec, limit="768Mi", configuration=state)
    assert containers(kube, "orders-a")["orders"] == "768Mi"
    assert containers(kube, "orders-b")["orders"] == "1Gi"
    assert containers(kube, "billing-a")["orders"] == "1Gi"
    restore_memory_limit(configuration=state)
    assert containers(kube, "orders-a")["orders"] == "1Gi"


def test_chaosmem_rollback_restores_from_the_ledger(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    two_pods_and_a_stranger(kube)
    tighten_memory_limit(SELECTOR, limit="600Mi", configuration=state)
    steps = rollback(Path(state["chaosmem_state_dir"]))
    assert [s.ok for s in steps] == [True]
    assert "restored" in str(steps[0].done)
    assert containers(kube, "orders-b") == {"orders": "1Gi", "envoy": "256Mi"}


def test_restore_falls_back_to_the_annotation(kube: KubeDouble, state: dict[str, Any]) -> None:
    """A pod that had no limit in the ledger's eyes still gets the annotated original back."""
    two_pods_and_a_stranger(kube)
    spec = {"type": "pod", "namespace": "shop", "name": "orders-a", "container": "orders"}
    tighten_memory_limit(spec, limit="700Mi", configuration=state)
    ledger = Ledger(Path(state["chaosmem_state_dir"]))
    entry = ledger.read().open()[0]
    # a hand-edited or older ledger without the original: the annotation still knows it
    entry.undo["objects"][0]["original"] = None
    assert "1Gi" in ledger.undo(entry)
    assert containers(kube, "orders-a")["orders"] == "1Gi"


def test_three_not_found_failures_are_distinct(kube: KubeDouble, state: dict[str, Any]) -> None:
    two_pods_and_a_stranger(kube)
    with pytest.raises(NotFound, match=r"namespace 'nowhere' not found"):
        memory_limit({**SELECTOR, "namespace": "nowhere"}, state)
    with pytest.raises(
        NotFound, match=r"no pod in namespace 'shop' matches label selector 'app=ghost'"
    ):
        memory_limit({**SELECTOR, "label_selector": "app=ghost"}, state)
    with pytest.raises(
        NotFound,
        match=r"container 'redis' is not in pod shop/orders-a \(its containers: orders, envoy\)",
    ):
        memory_limit({**SELECTOR, "container": "redis"}, state)
    with pytest.raises(NotFound, match=r"pod 'orders-z' not found in namespace 'shop'"):
        memory_limit({"type": "pod", "namespace": "shop", "name": "orders-z"}, state)
    with pytest.raises(NotFound, match=r"deployment 'ghost' not found"):
        memory_limit({"type": "deployment", "namespace": "shop", "name": "ghost"}, state)
    assert kube.patches() == []


@pytest.mark.parametrize(
    ("spec", "argument"),
    [
        ({"type": "pod", "namespace": "shop", "container": "orders"}, "target"),
        ({**SELECTOR, "name": "orders-a"}, "target"),
        ({**SELECTOR, "qty": 0}, "target.qty"),
        ({**SELECTOR, "percent": 101}, "target.percent"),
        ({**SELECTOR, "qty": 1, "percent": 50}, "target"),
        ({**SELECTOR, "mode": "yolo"}, "target.mode"),
        ({**SELECTOR, "replicas": 3}, "target.replicas"),
        ({**SELECTOR, "namespace": "a/b"}, "target.namespace"),
        ({**SELECTOR, "namespace": ".."}, "target.namespace"),
        ({"type": "pod", "namespace": "shop", "name": ".."}, "target.name"),
        ({"type": "pod", "namespace": "shop", "name": "a%2Fb"}, "target.name"),
        ({"type": "deployment", "namespace": "shop", "name": "x" * 254}, "target.name"),
        ({**SELECTOR, "container": "Orders"}, "target.container"),
        ({**SELECTOR, "qty": 1.5}, "target.qty"),
        ({**SELECTOR, "qty": True}, "target.qty"),
        ({**SELECTOR, "label_selector": ""}, "target.label_selector"),
        ({"type": "deployment", "namespace": "shop"}, "target.name"),
    ],
)
def test_bad_kube_targets_name_the_argument(
    kube: KubeDouble, state: dict[str, Any], spec: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        memory_limit(spec, state)
    assert info.value.name == argument
    assert kube.requests == []  # refused before any request


def test_resize_deferred_is_reported_and_undone(kube: KubeDouble, state: dict[str, Any]) -> None:
    kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi"}))
    kube.reactions["orders-a"] = condition_reaction(
        "PodResizePending", "Deferred", "Node didn't have enough resource: memory"
    )
    result = tighten_memory_limit(SELECTOR, limit="2Gi", configuration=state)
    assert result["change"]["outcome"] == "deferred"
    assert "enough resource: memory" in result["change"]["detail"]
    # the spec holds the new limit: the entry stays open and the undo puts 1Gi back
    assert len(Ledger(Path(state["chaosmem_state_dir"])).read().open()) == 1
    restore_memory_limit(configuration=state)
    assert containers(kube, "orders-a")["orders"] == "1Gi"


def test_resize_in_progress_error_on_a_decrease(kube: KubeDouble, state: dict[str, Any]) -> None:
    kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi"}))
    kube.reactions["orders-a"] = condition_reaction(
        "PodResizeInProgress",
        "Error",
        "attempting to reduce memory limit below current usage",
    )
    result = tighten_memory_limit(SELECTOR, limit="128Mi", configuration=state)
    assert result["change"]["outcome"] == "error"
    assert "uses more than the new limit" in result["change"]["detail"]
    assert "below current usage" in result["change"]["detail"]


def test_legacy_status_resize_infeasible(kube: KubeDouble, state: dict[str, Any]) -> None:
    kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi"}))
    kube.reactions["orders-a"] = legacy_status_reaction("Infeasible")
    result = tighten_memory_limit(SELECTOR, limit="64Gi", configuration=state)
    assert result["change"]["outcome"] == "infeasible"
    assert "older than 1.33" in result["change"]["detail"]


def test_133_refuses_notrequired_decrease_in_words_and_nothing_changes(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    kube.minor = 33
    kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi", "envoy": "256Mi"}))
    with pytest.raises(LimitRefused, match=r"1\.33 refuses memory-limit decreases .* NotRequired"):
        tighten_memory_limit(SELECTOR, limit="512Mi", configuration=state)
    read = Ledger(Path(state["chaosmem_state_dir"])).read()
    assert read.open() == [] and read.entries[-1].outcome == "not-applied"
    assert containers(kube, "orders-a") == {"orders": "1Gi", "envoy": "256Mi"}
    assert ANNOTATION not in kube.pods[("shop", "orders-a")]["metadata"]["annotations"]
    # an increase is allowed on 1.33
    assert (
        tighten_memory_limit(SELECTOR, limit="2Gi", configuration=state)["change"]["outcome"]
        == "applied"
    )


def test_decrease_with_notrequired_on_134_is_explained(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi"}))
    result = tighten_memory_limit(SELECTOR, limit="512Mi", configuration=state)
    assert result["change"]["outcome"] == "applied"
    assert (
        "1.34+" in result["change"]["detail"] and "without a restart" in result["change"]["detail"]
    )


def test_restart_container_policy_is_reported_never_an_oom(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    kube.add_pod(
        make_pod("orders-a", containers={"orders": "1Gi"}, resize_policy="RestartContainer")
    )

    def restart(double: KubeDouble, pod: dict[str, Any]) -> None:
        from tests.kube_double import apply_resize

        apply_resize(double, pod)
        status = pod["status"]["containerStatuses"][0]
        status["restartCount"] += 1
        status["lastState"] = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "finishedAt": "2026-11-29T12:00:00Z",
                "containerID": status["containerID"],
            }
        }

    kube.reactions["orders-a"] = restart
    result = tighten_memory_limit(SELECTOR, limit="512Mi", configuration=state)
    assert result["change"]["outcome"] == "applied"
    assert result["change"]["objects"][0]["restarted"] is True
    assert "not an OOM kill" in result["change"]["detail"]
    assert oom_kill_count(SELECTOR, state) == 0


def test_no_resize_subresource_suggests_rollout(kube: KubeDouble, state: dict[str, Any]) -> None:
    kube.resize_subresource = False
    kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi"}))
    with pytest.raises(ChaosmemError, match=r'"mode": "rollout"'):
        tighten_memory_limit(SELECTOR, limit="512Mi", configuration=state)
    read = Ledger(Path(state["chaosmem_state_dir"])).read()
    assert read.open() == [] and read.entries[-1].outcome == "not-applied"
    assert containers(kube, "orders-a")["orders"] == "1Gi"


def test_deployment_target_patches_the_template_and_waits_for_the_rollout(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    kube.add_deployment("orders", containers={"orders": "1Gi", "envoy": "128Mi"})
    spec = {"type": "deployment", "namespace": "shop", "name": "orders", "container": "orders"}
    result = tighten_memory_limit(spec, limit="512Mi", configuration=state)
    assert result["change"]["outcome"] == "applied"
    deployment = kube.deployments[("shop", "orders")]
    template = {
        c["name"]: c["resources"]["limits"]["memory"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
    }
    assert template == {"orders": "512Mi", "envoy": "128Mi"}
    assert json.loads(deployment["metadata"]["annotations"][ANNOTATION]) == {"orders": "1Gi"}
    assert memory_limit(spec, state) == 512 << 20
    restore_memory_limit(spec, configuration=state)
    deployment = kube.deployments[("shop", "orders")]
    template = {
        c["name"]: c["resources"]["limits"]["memory"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
    }
    assert template == {"orders": "1Gi", "envoy": "128Mi"}
    assert ANNOTATION not in deployment["metadata"]["annotations"]


def test_oom_kill_count_counts_only_the_named_container(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    """A sidecar OOM-killed beside a healthy app: not the app's kill; both count with no container."""
    pod = make_pod("orders-a", containers={"orders": "1Gi", "envoy": "64Mi"})
    oom_kill(pod, "envoy")
    kube.add_pod(pod)
    assert oom_kill_count(SELECTOR, state) == 0
    assert oom_kill_count({**SELECTOR, "container": "envoy"}, state) == 1
    unnamed = {k: v for k, v in SELECTOR.items() if k != "container"}
    assert oom_kill_count(unnamed, state) == 1
    kube.update_pod("shop", "orders-a", lambda p: oom_kill(p, "orders"))
    assert oom_kill_count(SELECTOR, state) == 1
    assert oom_kill_count(unnamed, state) == 2


def test_memory_usage_from_metrics(kube: KubeDouble, state: dict[str, Any]) -> None:
    two_pods_and_a_stranger(kube)
    kube.metrics[("shop", "orders-a")] = {"orders": "300Mi", "envoy": "900Mi"}
    kube.metrics[("shop", "orders-b")] = {"orders": "400Mi", "envoy": "10Mi"}
    assert memory_usage(SELECTOR, state) == 400 << 20
    result = tighten_memory_limit({**SELECTOR}, fraction="50%", configuration=state)
    assert result["requested"] == 512 << 20  # half the 1Gi limit


def test_rollout_mode_patches_the_owning_deployment(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    """A cluster without pods/resize: "mode": "rollout" goes through the Deployment's template."""
    kube.resize_subresource = False
    kube.add_deployment("orders", containers={"orders": "1Gi", "envoy": "128Mi"})
    for name in ("orders-a", "orders-b"):
        kube.add_pod(
            make_pod(name, containers={"orders": "1Gi", "envoy": "128Mi"}, owner="orders-7d9f5c")
        )
    spec = {**SELECTOR, "mode": "rollout"}
    result = tighten_memory_limit(spec, limit="512Mi", configuration=state)
    assert result["change"]["outcome"] == "applied"
    assert kube.patches("/resize") == []
    template = kube.deployments[("shop", "orders")]["spec"]["template"]["spec"]["containers"]
    assert {c["name"]: c["resources"]["limits"]["memory"] for c in template} == {
        "orders": "512Mi",
        "envoy": "128Mi",
    }
    entry = Ledger(Path(state["chaosmem_state_dir"])).read().open()[0]
    assert entry.undo["mode"] == "rollout" and entry.undo["objects"][0]["kind"] == "Deployment"
    restore_memory_limit(configuration=state)
    template = kube.deployments[("shop", "orders")]["spec"]["template"]["spec"]["containers"]
    assert template[0]["resources"]["limits"]["memory"] == "1Gi"


def test_rollout_mode_needs_an_owning_deployment(kube: KubeDouble, state: dict[str, Any]) -> None:
    kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi"}))  # a bare pod
    with pytest.raises(ChaosmemError, match="needs a pod owned by a Deployment"):
        tighten_memory_limit({**SELECTOR, "mode": "rollout"}, limit="512Mi", configuration=state)
    assert kube.patches() == []
