"""OOM kills of pods during a run: the control's pod watch sees every one, over real HTTP."""

from __future__ import annotations

import time
from typing import Any

from chaosmem import control
from chaosmem.ledger import set_current_run
from chaosmem.limits.probes import oom_kill_count
from tests.kube_double import KubeDouble, make_pod, oom_kill

SELECTOR = {
    "type": "pod",
    "namespace": "shop",
    "label_selector": "app=orders",
    "container": "orders",
}
UNNAMED = {"type": "pod", "namespace": "shop", "label_selector": "app=orders"}


def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_run_counts_every_kill_of_the_named_container(
    kube: KubeDouble, state: dict[str, Any]
) -> None:
    """OOMKilled and restarted twice during the run (lastState keeps only the last), a kill
    before the run, a sidecar kill, and two kills folded into one status update."""
    before = make_pod("orders-a", containers={"orders": "1Gi", "envoy": "64Mi"})
    oom_kill(before, "orders")  # before the run: not this run's
    kube.add_pod(before)
    kube.add_pod(make_pod("orders-b", containers={"orders": "1Gi", "envoy": "64Mi"}))
    kube.add_pod(make_pod("billing-a", labels={"app": "billing"}, containers={"orders": "1Gi"}))
    experiment = {
        "title": "pods under pressure",
        "method": [
            {
                "type": "probe",
                "name": "kills",
                "provider": {"type": "python", "arguments": {"target": SELECTOR}},
            },
            {
                "type": "probe",
                "name": "all",
                "provider": {"type": "python", "arguments": {"target": UNNAMED}},
            },
        ],
    }
    control.before_experiment_control(experiment, configuration=state, interval="0.2s")
    try:
        assert oom_kill_count(SELECTOR, state) == 0
        kube.update_pod("shop", "orders-a", lambda p: oom_kill(p, "orders"))
        wait_for(lambda: oom_kill_count(SELECTOR, state) == 1)
        kube.update_pod("shop", "orders-a", lambda p: oom_kill(p, "orders"))
        wait_for(lambda: oom_kill_count(SELECTOR, state) == 2)
        kube.update_pod("shop", "orders-b", lambda p: oom_kill(p, "envoy"))  # the sidecar
        kube.update_pod("shop", "billing-a", lambda p: oom_kill(p, "orders"))  # another app

        def twice(pod: dict[str, Any]) -> None:  # killed, restarted, killed again between events
            oom_kill(pod, "orders")
            oom_kill(pod, "orders")

        kube.update_pod("shop", "orders-b", twice)
        wait_for(lambda: oom_kill_count(SELECTOR, state) == 4)
        wait_for(lambda: oom_kill_count(UNNAMED, state) == 5)
        time.sleep(0.5)  # nothing else arrives late
        assert oom_kill_count(SELECTOR, state) == 4
    finally:
        journal: dict[str, Any] = {"status": "completed"}
        control.after_experiment_control(experiment, state=journal, configuration=state)
        set_current_run(None)
    ext = journal["extensions"][0]
    kills = [m for m in ext["oom_kills"] if m["target"] == SELECTOR]
    assert sum(m["kills"] for m in kills) == 4
    assert {m["pod"] for m in kills} == {"shop/orders-a", "shop/orders-b"}
    assert all(m["container"] == "orders" for m in kills)
    # after the run, without a watch: the last terminations (orders-a and orders-b's orders)
    assert oom_kill_count(SELECTOR, state) == 2
    samples = [r for r in ext["timeline"] if r["kind"] == "sample" and "targets" in r]
    assert samples and any(row.get("oom_kills") for r in samples for row in r["targets"])
    # a row per pod as well: the last sample has each pod's own kills of the named container
    last = {row["name"]: row for row in samples[-1]["targets"]}
    assert last["shop/orders-a (orders)"]["oom_kills"] == 2
    assert last["shop/orders-b (orders)"]["oom_kills"] == 2
    assert last["shop/orders-a (orders)"]["limit"] == 1 << 30
    assert "shop/billing-a (orders)" not in last
