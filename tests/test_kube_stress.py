"""Stress inside a pod's container through exec: the engine is shipped over the exec stream and
the API double runs it in a real child memory cgroup standing for the container."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.kube import stress as kube_stress
from chaosmem.ledger import Ledger
from chaosmem.rollback import rollback
from chaosmem.stress.actions import inject_allocation_stress, stop_allocation_stress
from chaosmem.stress.engine import EXIT_PARENT_GONE
from chaosmem.targets.cgroup import Cgroup
from tests.kube_double import KubeDouble, make_pod

TARGET = {"type": "pod", "namespace": "shop", "name": "orders-a", "container": "orders"}


@pytest.fixture
def pod(kube: KubeDouble, cgroup: Cgroup) -> Cgroup:
    """Pod orders-a whose container "orders" is the test's child cgroup (256Mi limit)."""
    kube.add_pod(make_pod("orders-a", containers={"orders": "256Mi", "envoy": "64Mi"}))
    cgroup.set_memory_limit(256 << 20)
    kube.exec_cgroups[("shop", "orders-a", "orders")] = cgroup
    return cgroup


def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_engine_runs_in_the_container_and_stops(
    kube: KubeDouble, pod: Cgroup, state: dict[str, Any]
) -> None:
    before = pod.memory_usage()
    result = inject_allocation_stress(TARGET, size="48Mi", configuration=state)
    assert result["pods"] == ["shop/orders-a"] and result["stressors"][0]["outcome"] == "running"
    exec_requests = [r for r in kube.requests if r.path.endswith("/exec")]
    assert exec_requests[0].query["container"] == ["orders"]
    assert exec_requests[0].query["command"][:2] == ["python3", "-I"]
    wait_for(lambda: pod.memory_usage() - before >= 48 << 20)  # charged to the container
    stopped = stop_allocation_stress(TARGET, configuration=state)
    assert stopped["count"] == 1 and stopped["stopped"][0]["pids"]
    wait_for(lambda: pod.pids() == [])
    assert Ledger(Path(state["chaosmem_state_dir"])).read().open() == []


def test_oom_kill_inside_the_container_is_a_result(
    kube: KubeDouble, pod: Cgroup, state: dict[str, Any]
) -> None:
    pod.set_memory_limit(64 << 20)
    result = inject_allocation_stress(
        TARGET, size="200Mi", growth_rate="400Mi/s", wait=True, configuration=state
    )
    assert result["oom_killed"] is True
    assert result["stressors"][0]["outcome"] == "oom-killed"
    assert result["stressors"][0]["exit_code"] == 137
    assert pod.oom_kill_count() >= 1


def test_engine_ends_when_the_exec_stream_closes(
    kube: KubeDouble, pod: Cgroup, state: dict[str, Any]
) -> None:
    """The run died: its exec stream closes, stdin reaches EOF, the engine ends itself."""
    result = inject_allocation_stress(TARGET, size="16Mi", configuration=state)
    stressor = kube_stress._LIVE[result["stressors"][0]["id"]]
    wait_for(lambda: pod.pids() != [])
    assert stressor._client is not None
    stressor._client.sock.close()  # the socket dies as with the process that held it
    wait_for(lambda: pod.pids() == [])
    wait_for(lambda: any(p.returncode is not None for p in kube.exec_processes))
    assert kube.exec_processes[0].returncode == EXIT_PARENT_GONE


def test_chaosmem_rollback_stops_it_through_exec(
    kube: KubeDouble, pod: Cgroup, state: dict[str, Any]
) -> None:
    inject_allocation_stress(TARGET, size="16Mi", hold="5m", configuration=state)
    wait_for(lambda: pod.pids() != [])
    steps = rollback(Path(state["chaosmem_state_dir"]))
    assert [s.ok for s in steps] == [True] and "stopped pids" in str(steps[0].done)
    wait_for(lambda: pod.pids() == [])


def test_image_without_python_says_how_to_add_a_sidecar(
    kube: KubeDouble, pod: Cgroup, state: dict[str, Any]
) -> None:
    kube.missing_executables.add("python3")
    with pytest.raises(ChaosmemError, match=r"has no python3.*sidecar"):
        inject_allocation_stress(TARGET, size="16Mi", configuration=state)
    assert pod.pids() == []


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"workers": 2}, "workers"), ({"respawn": True, "hold": "10s"}, "respawn")],
)
def test_pod_stress_refuses_what_it_cannot_do(
    kube: KubeDouble, pod: Cgroup, state: dict[str, Any], kwargs: dict[str, Any], argument: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        inject_allocation_stress(TARGET, size="16Mi", configuration=state, **kwargs)
    assert info.value.name == argument


def test_exec_refused_by_the_server_is_an_error(
    kube: KubeDouble, pod: Cgroup, state: dict[str, Any]
) -> None:
    """A pod whose exec the API refuses (here: no container standing for it) fails clearly."""
    kube.exec_cgroups.clear()
    with pytest.raises(
        ChaosmemError, match=r"exec into pod shop/orders-a container 'orders' failed"
    ):
        inject_allocation_stress(TARGET, size="16Mi", configuration=state)
