"""A replay as a Kubernetes Indexed Job: the real ``kubernetes`` client over HTTP to the API
double, whose kubelet runs each pod's container command for real against a loopback server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.ledger import Ledger
from chaosmem.rollback import rollback
from chaosmem.traffic.actions import replay_traffic
from chaosmem.traffic.kubejob import LEDGER_KIND, job_manifest, parse_scale
from chaosmem.traffic.options import parse_options
from tests.kube_jobs import JobDouble, kube_jobs  # noqa: F401
from tests.test_traffic_scale import _sessions_capture
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer

#: A hang guard, not a speed figure; the looping replay here is asked to last 10 minutes.
HANG = 120
SCALE = {"namespace": "shop", "pods": 3, "image": "registry.example/chaosmem:0.1"}


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"chaosmem_state_dir": str(tmp_path / "state")}


def test_three_pods_replay_their_shards_and_merge_into_one_replay(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
) -> None:
    volume = tmp_path / "configmap"
    volume.mkdir()
    sessions, per_session = 30, 10
    _sessions_capture(volume / "sessions.gor", sessions=sessions, per_session=per_session)
    kube_jobs.volumes["captures"] = volume
    with RecordingServer() as server:
        summary = replay_traffic(
            capture="sessions.gor", target_url=server.url, rate=1000, session_key="X-Session-Id",
            scale={**SCALE, "capture_configmap": "captures", "start_delay": "3s"},
            configuration=config,
        )  # fmt: skip
        arrived = server.arrived
    total = sessions * per_session
    by_session: dict[str, list[int]] = {}
    for request in arrived:
        _, _s, session, n = request.target.split("/")
        by_session.setdefault(session, []).append(int(n))
    assert by_session == {str(s): list(range(per_session)) for s in range(sessions)}
    assert summary["state"] == "done", summary.get("error")
    assert summary["sent"] == summary["completed"] == len(arrived) == total
    assert summary["workers"] == 3
    # every pod had a share, and its results came from its log, through the API
    state = Path(config["chaosmem_state_dir"])
    shards = [
        json.loads((state / "replays" / summary["replay_id"] / "shards" / str(n) / "summary.json")
                   .read_text())
        for n in range(3)
    ]  # fmt: skip
    assert sum(s["sent"] for s in shards) == total and min(s["sent"] for s in shards) > 0
    # each pod's log was followed (a stream, not a read at the end), the three of them
    assert len({pod for _, pod in kube_jobs.follows}) == 3
    # the pods shared one clock: each kept the start time the Job agreed in advance, and no
    # request went out before it
    (manifest,) = kube_jobs.manifests
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    start_at = json.loads(env["CHAOSMEM_REPLAY"])["start_at"]
    assert [s["started_at"] for s in shards] == [round(start_at, 3)] * 3
    assert summary["started_at"] == round(start_at, 3)
    assert min(a.at for a in arrived) >= start_at - 0.01  # clock reads' rounding
    # the Job: Indexed, a deadline of its own, deleted at the end, closed on the ledger
    assert manifest["spec"]["completionMode"] == "Indexed"
    assert manifest["spec"]["completions"] == 3 and manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["activeDeadlineSeconds"] > 0
    assert not kube_jobs.jobs
    assert not Ledger(state).read().open(kind=LEDGER_KIND)
    closed = [e for e in Ledger(state).read().entries if e.kind == LEDGER_KIND]
    assert closed and closed[0].target["job"] == manifest["metadata"]["name"]


def test_rollback_deletes_a_running_replay_job(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
) -> None:
    volume = tmp_path / "pvc"
    volume.mkdir()
    write_timed_gor(volume / "t.gor", count=50, span_s=1.0)
    kube_jobs.volumes["captures"] = volume
    failure: list[BaseException] = []

    def replay() -> None:
        try:
            replay_traffic(
                capture="t.gor", target_url=server.url, loop=True, duration="10m",
                scale={**SCALE, "pods": 2, "capture_pvc": "captures", "start_delay": "0s"},
                configuration=config,
            )  # fmt: skip
        except BaseException as exc:
            failure.append(exc)

    with RecordingServer() as server:
        worker = threading.Thread(target=replay)
        worker.start()
        state = Path(config["chaosmem_state_dir"])
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline and not (kube_jobs.jobs and len(server.arrived) > 5):
            time.sleep(0.1)
        assert kube_jobs.jobs and len(server.arrived) > 5, f"hung: no Job sending in {HANG} s"
        steps = rollback(state)
        worker.join(HANG)
    assert not worker.is_alive(), "hung: the replay outlived the rollback of its Job"
    done = next(s.done for s in steps if s.entry.kind == LEDGER_KIND)
    assert done is not None and done.endswith("deleted")
    assert not kube_jobs.jobs
    kube_jobs.wait_pods(HANG)
    assert all(p.returncode is not None for p in kube_jobs.processes.values())
    assert failure and isinstance(failure[0], ChaosmemError)  # the replay says its Job is gone


@pytest.mark.parametrize("source", ["capture_url", "capture_configmap", "capture_pvc"])
def test_job_manifest_validates_against_the_kubernetes_schemas(tmp_path: Path, source: str) -> None:
    value = "https://captures.example/orders.gor" if source == "capture_url" else "captures"
    scale = parse_scale({**SCALE, source: value, "service_account": "chaosmem"})
    options = parse_options(
        capture="orders.gor", target_url="http://orders.shop.svc:8080", allow_remote=True,
        duration="5m", local_capture=False,
    )  # fmt: skip
    manifest = job_manifest(options, scale, replay_id="20260101T000000Z-abc123", start_at=1e9)
    kubernetes_validate.validate(manifest, "1.33.0", strict=True)
    assert manifest["spec"]["activeDeadlineSeconds"] >= 300
    broken = json.loads(json.dumps(manifest))
    broken["spec"]["completionMode"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


@pytest.mark.parametrize(
    ("scale", "argument"),
    [
        ("shop", "scale"),
        ({**SCALE, "capture_url": "https://x/a.gor", "replicas": 2}, "scale"),
        ({**SCALE, "capture_url": "https://x/a.gor", "namespace": "Shop_1"}, "scale.namespace"),
        ({**SCALE, "capture_url": "https://x/a.gor", "pods": 0}, "scale.pods"),
        ({**SCALE, "capture_url": "https://x/a.gor", "pods": True}, "scale.pods"),
        ({**SCALE, "capture_url": "https://x/a.gor", "pods": 10**6}, "scale.pods"),
        ({**SCALE, "capture_url": "https://x/a.gor", "image": "a b"}, "scale.image"),
        (SCALE, "scale"),
        ({**SCALE, "capture_url": "https://x/a", "capture_pvc": "p"}, "scale"),
        ({**SCALE, "capture_url": "file:///etc/passwd"}, "scale.capture_url"),
        ({**SCALE, "capture_configmap": "../x"}, "scale.capture_configmap"),
        ({**SCALE, "capture_pvc": "p", "start_delay": "-1s"}, "scale.start_delay"),
        ({**SCALE, "capture_pvc": "p", "deadline": "inf"}, "scale.deadline"),
    ],
)
def test_bad_scale_is_refused(scale: Any, argument: str) -> None:
    with pytest.raises(InvalidArgument, match=f"'{argument}'"):
        parse_scale(scale)


@pytest.mark.parametrize("capture", ["/etc/passwd", "../x.gor", ["a.gor", "b/../../c"], []])
def test_capture_paths_in_pods_stay_inside_the_volume(capture: Any) -> None:
    with pytest.raises(InvalidArgument, match="'capture'"):
        parse_options(capture=capture, target_url="http://127.0.0.1:9", local_capture=False)
