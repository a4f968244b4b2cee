"""Real `chaos run` against the API double: SIGTERM during a blocking kubernetes activity (an
in-pod ``wait: true`` stressor, an HPA reaction probe) stops it at once and ends the run
interrupted, with everything restored."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chaosmem.targets.cgroup import Cgroup
from tests.kube_double import KubeDouble, make_pod
from tests.test_interrupted_activity import _check_interrupted, _experiment, _start, _wait

POD = {"type": "pod", "namespace": "shop", "name": "orders-a", "container": "orders"}


@pytest.fixture
def container(own_cgroup: Cgroup) -> Iterator[Cgroup]:
    group = own_cgroup.child(f"test-pod-{uuid.uuid4().hex[:8]}")
    try:
        yield group
    finally:
        group.remove(grace=1)


def _probe(title: str, module: str, func: str, **arguments: Any) -> dict[str, Any]:
    return {
        "type": "probe",
        "name": title,
        "provider": {"type": "python", "module": module, "func": func, "arguments": arguments},
    }


def test_sigterm_during_an_in_pod_waiting_stressor(
    tmp_path: Any, kube: KubeDouble, cgroup: Cgroup, container: Cgroup
) -> None:
    kube.add_pod(make_pod("orders-a", containers={"orders": "256Mi", "envoy": "64Mi"}))
    container.set_memory_limit(256 << 20)
    kube.exec_cgroups[("shop", "orders-a", "orders")] = container
    cgroup.set_memory_limit(256 << 20)
    stress = {
        "type": "action",
        "name": "stress-in-the-pod",
        "provider": {
            "type": "python", "module": "chaosmem.stress.actions",
            "func": "inject_allocation_stress",
            "arguments": {"target": POD, "size": "16Mi", "hold": "60s", "wait": True},
        },
    }  # fmt: skip
    proc = _start(_experiment(tmp_path, cgroup, stress), tmp_path)
    _wait("the in-pod stressor holds 16Mi", lambda: container.memory_usage() >= 16 << 20, proc)
    extension, output = _check_interrupted(proc, tmp_path, cgroup, signal.SIGTERM)
    assert extension["interrupted"]["activity"] == "stress-in-the-pod", output
    deadline = time.monotonic() + 10
    while container.pids():
        assert time.monotonic() < deadline, output
        time.sleep(0.05)


def test_sigterm_while_waiting_for_the_autoscaler(
    tmp_path: Any, kube: KubeDouble, cgroup: Cgroup
) -> None:
    kube.add_hpa("orders", "shop", target="orders", current=2, desired=2)  # it never scales
    cgroup.set_memory_limit(256 << 20)
    probe = _probe(
        "hpa-reacts", "chaosmem.autoscaling.probes", "autoscaling_reaction_time",
        namespace="shop", hpa="orders", timeout="60s", until="scaled",
    )  # fmt: skip
    proc = _start(_experiment(tmp_path, cgroup, probe), tmp_path)
    _wait(
        "the probe polls the HPA",
        lambda: any("horizontalpodautoscalers" in r.path for r in kube.requests),
        proc,
    )
    extension, output = _check_interrupted(proc, tmp_path, cgroup, signal.SIGTERM)
    assert extension["interrupted"]["activity"] == "hpa-reacts", output
