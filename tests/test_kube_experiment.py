"""experiments/k8s-memory-pressure.json through a real ``chaos run``, against the API double.

The pods' containers are real child memory cgroups (the double applies resizes to them and runs
exec'd commands in them), the traffic goes to a real loopback HTTP server, and the HPA scales
2 -> 4 with its new pods turning Ready while the experiment runs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosmem.ledger import Ledger
from chaosmem.targets.cgroup import Cgroup
from tests.kube_double import KubeDouble, make_pod, now_iso
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer

REPO = Path(__file__).resolve().parent.parent
CHAOS = Path(sys.executable).with_name("chaos")


@pytest.fixture
def containers(own_cgroup: Cgroup) -> Iterator[list[Cgroup]]:
    groups = [own_cgroup.child(f"test-pod-{uuid.uuid4().hex[:8]}") for _ in range(2)]
    try:
        yield groups
    finally:
        for group in groups:
            group.remove(grace=1)


def scale_when_stressed(kube: KubeDouble, stop: threading.Event) -> None:
    """The HPA reacts once stress starts: desired 2 -> 4, two new pods Ready a second later."""
    while not stop.is_set() and not any(r.path.endswith("/exec") for r in kube.requests):
        time.sleep(0.05)
    if stop.is_set():
        return
    at = math.ceil(time.time())
    with kube.lock:
        status = kube.hpas[("shop", "orders")]["status"]
        status.update(desiredReplicas=4, lastScaleTime=now_iso(at))
        status["conditions"][0].update(reason="SucceededRescale", lastTransitionTime=now_iso(at))
    for name in ("orders-c", "orders-d"):
        pod = make_pod(name, containers={"orders": "1Gi", "envoy": "128Mi"}, owner="orders-7d9f5c")
        for condition in pod["status"]["conditions"]:
            if condition["type"] == "Ready":
                condition["lastTransitionTime"] = now_iso(at + 1)
        kube.add_pod(pod)


def test_k8s_memory_pressure_experiment_passes_and_restores_everything(
    kube: KubeDouble, containers: list[Cgroup], tmp_path: Path
) -> None:
    kube.add_deployment("orders", replicas=2, containers={"orders": "1Gi", "envoy": "128Mi"})
    for name, group in zip(("orders-a", "orders-b"), containers, strict=True):
        kube.add_pod(
            make_pod(name, containers={"orders": "1Gi", "envoy": "128Mi"}, owner="orders-7d9f5c")
        )
        kube.exec_cgroups[("shop", name, "orders")] = group
        group.set_memory_limit(1 << 30)
    kube.add_pod(make_pod("billing-a", labels={"app": "billing"}, containers={"orders": "1Gi"}))
    kube.add_hpa("orders", "shop", target="orders", current=2, desired=2)
    capture = write_timed_gor(tmp_path / "orders.gor", count=40, span_s=1.0)
    state = tmp_path / "state"
    stop = threading.Event()
    scaler = threading.Thread(target=scale_when_stressed, args=(kube, stop), daemon=True)
    scaler.start()
    journal = tmp_path / "journal.json"
    with RecordingServer() as server:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CHAOSMEM_STATE_DIR": str(state),
            "ORDERS_URL": server.url,
            "CHAOSMEM_CAPTURE": str(capture),
            "CHAOSMEM_REPLAY_DURATION": "3s",
            "CHAOSMEM_STRESS_SIZE": "24Mi",
            "CHAOSMEM_STRESS_RATE": "48Mi/s",
            "CHAOSMEM_STRESS_HOLD": "1s",
            "CHAOSMEM_OBSERVE_SECONDS": "3",
        }
        try:
            done = subprocess.run(
                [
                    str(CHAOS),
                    "--no-version-check",
                    "--no-log-file",
                    "--settings",
                    str(tmp_path / "none.yaml"),
                    "run",
                    "--hypothesis-strategy",
                    "after-method-only",
                    "--journal-path",
                    str(journal),
                    str(REPO / "experiments/k8s-memory-pressure.json"),
                ],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
        finally:
            stop.set()
            scaler.join(5)
        arrived = len(server.arrived)
    result = json.loads(journal.read_text())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert result["status"] == "completed" and result["deviated"] is False
    probes = {p["activity"]["name"]: p for p in result["steady_states"]["after"]["probes"]}
    assert probes["orders-never-oom-killed"]["output"] == 0
    assert probes["under-1-percent-503"]["output"] == 0.0
    reaction = probes["hpa-ready-within-2m"]["output"]
    assert isinstance(reaction, float | int) and 0 < reaction <= 120
    assert arrived > 0
    # the tighten reached both pods through pods/resize, and the kernel saw 512Mi
    resized = [r for r in kube.patches("/resize") if "512Mi" in json.dumps(r.body)]
    assert sorted(r.path.split("/")[-2] for r in resized) == ["orders-a", "orders-b"]
    tighten = next(r for r in result["run"] if r["activity"]["name"] == "tighten-to-512Mi")
    assert tighten["output"]["after"] == 512 << 20
    stress = next(r for r in result["run"] if r["activity"]["name"].startswith("grow-allocations"))
    assert stress["status"] == "succeeded" and stress["output"]["pods"] == [
        "shop/orders-a",
        "shop/orders-b",
    ]
    # everything is back: limits on the objects and on the kernel, nothing open, nothing running
    for name, group in zip(("orders-a", "orders-b"), containers, strict=True):
        pod = kube.pods[("shop", name)]
        assert {
            c["name"]: c["resources"]["limits"]["memory"] for c in pod["spec"]["containers"]
        } == {
            "orders": "1Gi",
            "envoy": "128Mi",
        }
        assert "chaosmem.io/original-limits" not in pod["metadata"]["annotations"]
        assert group.memory_limit() == 1 << 30
        assert group.pids() == []
    assert Ledger(state).read().open() == []
    extension = next(e for e in result["extensions"] if e["name"] == "chaosmem")
    samples = [r for r in extension["timeline"] if r["kind"] == "sample"]
    assert any(r.get("replicas", {}).get("desired") == 4 for r in samples)
