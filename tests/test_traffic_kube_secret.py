"""A replay Job's credentials travel in a Kubernetes Secret, never in the Job (issue 14.3 x 9.6).

The real ``kubernetes`` client speaks HTTP to the API double, whose kubelet runs each pod's
command for real: the loopback target must get the real ``Authorization`` header and the
capture server the real user info of ``capture_url``, while the Job, the pods, their logs, the
action's result, the ledger and the summary hold none of them. The Secret lives as long as the
Job: deleted at the end, and by ``chaosmem rollback`` after the coordinator was killed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from chaosmem.ledger import Ledger
from chaosmem.secrets import REDACTED
from chaosmem.traffic.actions import replay_traffic
from chaosmem.traffic.kubejob import (
    LEDGER_KIND,
    SECRET_KEY,
    job_manifest,
    parse_scale,
    secret_manifest,
)
from chaosmem.traffic.options import parse_options
from chaosmem.traffic.pod import SECRET_ENV, merge_secrets
from tests.kube_jobs import JobDouble, kube_jobs  # noqa: F401
from tests.test_traffic_secrets import _everything_written
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer

REPO = Path(__file__).resolve().parent.parent
SCALE = {"namespace": "shop", "image": "registry.example/chaosmem:0.1"}
TOKEN = "Bearer j0b-s3cr3t-t0ken"
PASSWORD = "url-pa55word-x"
CAPTURE_PASSWORD = "capture-pa55-y"
SECRETS = (TOKEN, PASSWORD, CAPTURE_PASSWORD)


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"chaosmem_state_dir": str(tmp_path / "state")}


class CaptureServer:
    """Serves one capture file on 127.0.0.1 behind HTTP Basic auth; records what it was sent."""

    def __init__(self, path: Path, *, user: str, password: str) -> None:
        self.path = path
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                server.seen.append(auth)
                if auth != server.expected or self.path != "/" + server.path.name:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{path.name}"

    def __enter__(self) -> CaptureServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _with_userinfo(url: str, password: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://alice:{password}@{parts.netloc}{parts.path}"


@pytest.fixture
def watch_secrets(kube_jobs: JobDouble) -> Iterator[list[bool]]:  # noqa: F811
    """While a pod's container runs: whether the Secret exists too, sampled every 20 ms. (The
    Secret is created just after the Job, which must exist to own it: the kubelet holds the
    containers until then.)"""
    samples: list[bool] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with kube_jobs.lock:
                if any(p.poll() is None for p in kube_jobs.processes.values()):
                    samples.append(bool(kube_jobs.secrets))
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    yield samples
    done.set()
    thread.join(5)


def _holds_secret(value: object) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return [s for s in SECRETS if s in text]


def test_credentials_reach_the_pods_only_through_a_secret_owned_by_the_job(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
    watch_secrets: list[bool],
) -> None:
    capture = write_timed_gor(tmp_path / "orders.gor", count=40, span_s=0.2)
    with (
        CaptureServer(capture, user="alice", password=CAPTURE_PASSWORD) as captures,
        RecordingServer() as server,
    ):
        summary = replay_traffic(
            capture="orders.gor", target_url=_with_userinfo(server.url, PASSWORD),
            headers={"Authorization": TOKEN, "X-Trace": "visible"},
            scale={**SCALE, "pods": 2, "start_delay": "3s",
                   "capture_url": _with_userinfo(captures.url, CAPTURE_PASSWORD)},
            configuration=config,
        )  # fmt: skip
        arrived = server.arrived
    assert summary["state"] == "done", summary.get("error")
    # the real values reached where they are used: the target, and the capture's server
    assert summary["completed"] == len(arrived) == 40  # split between the two pods
    assert all(a.headers["authorization"] == TOKEN for a in arrived)
    assert all(a.headers["x-trace"] == "visible" for a in arrived)
    assert captures.seen == [captures.expected] * 2  # one download per pod, no refusal
    # the Secret: created, owned by the Job, holding the real values, there while the Job ran
    (secret,) = kube_jobs.secret_manifests
    (job,) = kube_jobs.manifests
    name = job["metadata"]["name"]
    assert secret["metadata"]["name"] == name and secret["immutable"] is True
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["kind"] == "Job" and owner["name"] == name
    assert owner["uid"] and "uid" not in job["metadata"]  # the uid the server gave the Job
    values = json.loads(secret["stringData"][SECRET_KEY])
    assert values["options"]["headers"]["Authorization"] == TOKEN
    assert PASSWORD in values["options"]["target_url"]
    assert CAPTURE_PASSWORD in values["capture_url"]
    assert watch_secrets and all(watch_secrets), "a pod ran without its Secret"
    # ... and gone with the Job at the end, both closed on one ledger entry
    assert not kube_jobs.jobs and not kube_jobs.secrets
    state = Path(config["chaosmem_state_dir"])
    (entry,) = [e for e in Ledger(state).read().entries if e.kind == LEDGER_KIND]
    assert entry.closed and entry.undo == {"namespace": "shop", "name": name, "secret": name}
    # the pods got it by reference only: no value of it in the Job, the pods or their logs
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": SECRET_ENV,
        "valueFrom": {"secretKeyRef": {"name": name, "key": SECRET_KEY}},
    } in env
    assert _holds_secret(job) == []
    assert _holds_secret(list(kube_jobs.pods.values())) == []
    assert [_holds_secret(log.decode()) for log in kube_jobs.logs.values()] == [[], []]
    assert [r.path for r in kube_jobs.requests if _holds_secret(r.body)] == [
        "/api/v1/namespaces/shop/secrets"
    ]
    # the Job's spec is masked the way journals are
    replay = json.loads(next(e["value"] for e in env if e["name"] == "CHAOSMEM_REPLAY"))
    assert replay["options"]["headers"] == {"Authorization": REDACTED, "X-Trace": "visible"}
    assert f"alice:{REDACTED}@" in replay["options"]["target_url"]
    assert f"alice:{REDACTED}@" in replay["capture_url"]
    # the action's result, the summary, the ledger: nothing
    assert _holds_secret(summary) == []
    assert summary["options"]["headers"]["Authorization"] == REDACTED
    assert _holds_secret(_everything_written(state)) == []


def test_no_secret_when_nothing_is_secret(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
) -> None:
    volume = tmp_path / "configmap"
    volume.mkdir()
    write_timed_gor(volume / "t.gor", count=10, span_s=0.1)
    kube_jobs.volumes["captures"] = volume
    with RecordingServer() as server:
        summary = replay_traffic(
            capture="t.gor", target_url=server.url, headers={"X-Trace": "visible"},
            scale={**SCALE, "pods": 1, "capture_configmap": "captures", "start_delay": "1s"},
            configuration=config,
        )  # fmt: skip
        assert len(server.arrived) == 10
    assert summary["state"] == "done", summary.get("error")
    assert not [r for r in kube_jobs.requests if "/secrets" in r.path]
    (job,) = kube_jobs.manifests
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["CHAOSMEM_REPLAY", "CHAOSMEM_CAPTURE_DIR"]
    (entry,) = [
        e
        for e in Ledger(Path(config["chaosmem_state_dir"])).read().entries
        if e.kind == LEDGER_KIND
    ]
    assert "secret" not in entry.undo


def test_rollback_after_a_killed_run_deletes_the_job_and_its_secret(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
) -> None:
    volume = tmp_path / "pvc"
    volume.mkdir()
    write_timed_gor(volume / "t.gor", count=50, span_s=1.0)
    kube_jobs.volumes["captures"] = volume
    state = Path(config["chaosmem_state_dir"])
    with RecordingServer() as server:
        program = (
            "import sys, json\n"
            "from chaosmem.traffic.actions import replay_traffic\n"
            "replay_traffic(**json.loads(sys.argv[1]))\n"
        )
        arguments = {
            "capture": "t.gor", "target_url": _with_userinfo(server.url, PASSWORD),
            "headers": {"Authorization": TOKEN}, "loop": True, "duration": "60s",
            "scale": {**SCALE, "pods": 2, "capture_pvc": "captures", "start_delay": "0s"},
            "configuration": config,
        }  # fmt: skip
        run = subprocess.Popen(
            [sys.executable, "-c", program, json.dumps(arguments)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                kube_jobs.secrets and len(server.arrived) > 5
            ):
                time.sleep(0.1)
            assert kube_jobs.jobs and kube_jobs.secrets, "the Job and its Secret were not created"
            assert all(a.headers["authorization"] == TOKEN for a in server.arrived)
        finally:
            run.send_signal(signal.SIGKILL)  # the coordinator dies: nothing deletes anything
            run.wait(30)
        assert kube_jobs.jobs and kube_jobs.secrets  # left behind, as after any crash
        result = subprocess.run(
            [str(Path(sys.executable).parent / "chaosmem"), "rollback", "--state-dir", str(state)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "replay secret shop/" in result.stdout + result.stderr
    assert not kube_jobs.jobs and not kube_jobs.secrets
    assert not Ledger(state).read().open(kind=LEDGER_KIND)
    kube_jobs.wait_pods(30)
    assert _holds_secret(_everything_written(state)) == []
    assert _holds_secret(kube_jobs.manifests) == []


def test_secret_and_job_manifests_validate_against_the_kubernetes_schemas() -> None:
    scale = parse_scale(
        {**SCALE, "pods": 3, "capture_url": f"https://alice:{CAPTURE_PASSWORD}@x.example/o.gor"}
    )
    options = parse_options(
        capture="o.gor", target_url=f"http://alice:{PASSWORD}@orders.shop.svc:8080",
        headers={"Authorization": TOKEN}, allow_remote=True, duration="5m", local_capture=False,
    )  # fmt: skip
    rid = "20260101T000000Z-abc123"
    job = job_manifest(options, scale, replay_id=rid, start_at=1e9)
    secret = secret_manifest(options, scale, replay_id=rid, owner_uid="0b6c1d2e-uid")
    assert secret is not None
    for manifest in (job, secret):
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)
    assert _holds_secret(job) == [] and len(_holds_secret(secret)) == 3
    broken = json.loads(json.dumps(secret))
    broken["immutable"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)
    broken = json.loads(json.dumps(job))
    broken["spec"]["template"]["spec"]["containers"][0]["env"][-1]["valueFrom"] = {
        "secretKeyRef": {"key": 5}
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)
    plain = parse_options(capture="o.gor", target_url="http://127.0.0.1:9", local_capture=False)
    assert secret_manifest(plain, parse_scale({**SCALE, "pods": 1, "capture_pvc": "p"}),
                           replay_id=rid) is None  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        json.dumps({"options": {"concurrency": 5}}),
        json.dumps({"extra": 1}),
        json.dumps({"capture_url": 5}),
    ],
)
def test_a_malformed_secret_is_refused_without_quoting_it(text: str) -> None:
    spec = {"options": {"headers": {}}, "capture_url": None}
    with pytest.raises(ValueError, match=SECRET_ENV) as caught:
        merge_secrets(spec, text)
    assert text not in str(caught.value)
