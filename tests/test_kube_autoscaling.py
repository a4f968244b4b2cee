"""The HPA's reaction time and replicas, read from the cluster's own timestamps via the double."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import chaosmem.autoscaling.sources  # noqa: F401  (registers "replicas", as the control does)
from chaosmem.autoscaling.probes import autoscaling_reaction_time, replicas
from chaosmem.errors import InvalidArgument
from chaosmem.kube.client import NotFound
from chaosmem.ledger import set_current_run
from chaosmem.limits.actions import tighten_memory_limit
from chaosmem.timeline import Recorder
from tests.kube_double import KubeDouble, make_pod, now_iso


def scale_2_to_5(kube: KubeDouble, since: int) -> None:
    """An HPA that scaled orders from 2 to 5 at since+20; the new pods Ready at +25, +30, +41."""
    kube.add_deployment("orders", replicas=2, containers={"orders": "1Gi"})
    for index in range(5):
        pod = make_pod(f"orders-{index}", labels={"app": "orders"}, containers={"orders": "1Gi"})
        ready_at = [since - 600, since - 600, since + 25, since + 30, since + 41][index]
        for condition in pod["status"]["conditions"]:
            if condition["type"] == "Ready":
                condition["lastTransitionTime"] = now_iso(ready_at)
        kube.add_pod(pod)
    kube.add_pod(make_pod("billing-0", labels={"app": "billing"}))  # not the HPA's target
    hpa = kube.add_hpa("orders", "shop", target="orders", current=5, desired=5)
    hpa["status"]["lastScaleTime"] = now_iso(since + 20)
    hpa["status"]["conditions"][0].update(
        reason="SucceededRescale", lastTransitionTime=now_iso(since + 20)
    )


def test_reaction_until_scaled_and_until_ready(kube: KubeDouble, state: dict[str, Any]) -> None:
    since = int(time.time()) - 300
    scale_2_to_5(kube, since)
    assert (
        autoscaling_reaction_time(
            "shop", "orders", since=since, until="scaled", configuration=state
        )
        == 20
    )
    assert autoscaling_reaction_time("shop", "orders", since=since, configuration=state) == 41
    # the fifth pod was Ready 41 s after: too late for a 30 s budget
    assert (
        autoscaling_reaction_time("shop", "orders", since=since, timeout="30s", configuration=state)
        is None
    )
    # a scale before `since` is not a reaction to it
    assert (
        autoscaling_reaction_time(
            "shop", "orders", since=since + 21, timeout="1s", configuration=state
        )
        is None
    )
    assert replicas("shop", "orders", configuration=state) == {
        "current": 5,
        "desired": 5,
        "ready": 5,
        "summary": "HPA shop/orders: 5 current, 5 desired, 5 ready",
    }


def test_pod_not_ready_is_not_counted(kube: KubeDouble, state: dict[str, Any]) -> None:
    since = int(time.time()) - 300
    scale_2_to_5(kube, since)

    def unready(pod: dict[str, Any]) -> None:
        for condition in pod["status"]["conditions"]:
            if condition["type"] == "Ready":
                condition["status"] = "False"

    kube.update_pod("shop", "orders-4", unready)
    assert (
        autoscaling_reaction_time("shop", "orders", since=since, timeout="5m", configuration=state)
        is None
    )
    assert replicas("shop", "orders", configuration=state)["ready"] == 4


def test_since_defaults_to_the_runs_first_change(kube: KubeDouble, state: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="'since'"):
        autoscaling_reaction_time("shop", "orders", configuration=state)
    set_current_run("run-hpa")
    try:
        kube.add_pod(make_pod("orders-a", containers={"orders": "1Gi"}))
        tighten_memory_limit(
            {"type": "pod", "namespace": "shop", "name": "orders-a", "container": "orders"},
            limit="512Mi",
            configuration=state,
        )
        first = time.time()
        kube.add_deployment("orders", replicas=2, containers={"orders": "1Gi"})
        kube.add_hpa("orders", "shop", target="orders", current=2, desired=2)
        # no rescale since the run's first change: null after the timeout
        assert (
            autoscaling_reaction_time("shop", "orders", timeout="1s", configuration=state) is None
        )
        assert time.time() - first < 30
    finally:
        set_current_run(None)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"namespace": "", "hpa": "orders"}, "namespace"),
        ({"namespace": "shop", "hpa": 3}, "hpa"),
        ({"namespace": "shop", "hpa": "orders", "since": "yesterday"}, "since"),
        ({"namespace": "shop", "hpa": "orders", "since": float("nan")}, "since"),
        ({"namespace": "shop", "hpa": "orders", "since": 1, "timeout": "soon"}, "timeout"),
        ({"namespace": "shop", "hpa": "orders", "since": 1, "until": "done"}, "until"),
    ],
)
def test_bad_arguments(
    kube: KubeDouble, state: dict[str, Any], kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        autoscaling_reaction_time(**kwargs, configuration=state)
    assert info.value.name == argument


def test_unknown_hpa(kube: KubeDouble, state: dict[str, Any]) -> None:
    with pytest.raises(
        NotFound, match="horizontalpodautoscaler 'ghost' not found in namespace 'shop'"
    ):
        replicas("shop", "ghost", configuration=state)


def test_timeline_samples_replicas(kube: KubeDouble, state: dict[str, Any], tmp_path: Path) -> None:
    since = int(time.time()) - 300
    scale_2_to_5(kube, since)
    recorder = Recorder(
        directory=tmp_path / "run",
        interval=0.1,
        targets=[],
        configuration={**state, "chaosmem_hpa": {"namespace": "shop", "name": "orders"}},
    )
    recorder.start()
    time.sleep(0.5)
    records = recorder.stop()
    values = [r["replicas"] for r in records if r["kind"] == "sample" and "replicas" in r]
    assert values and values[-1] == {"current": 5, "desired": 5, "ready": 5}
