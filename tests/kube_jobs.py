"""Jobs and pod logs for the Kubernetes API double: a Job controller and a kubelet that really run.

:class:`JobDouble` extends :class:`tests.kube_double.KubeDouble` with the ``batch/v1`` Job
endpoints chaosmem uses (create, read status, delete) and ``pods/<name>/log``. Creating an
Indexed Job makes one pod per completion index (labels from the template, the
``batch.kubernetes.io/job-completion-index`` annotation) and runs each pod's container command
for real, as a local process: the container's ``env`` plus ``JOB_COMPLETION_INDEX``, with the
pod's capture volume (a ConfigMap or PVC, by name) mapped to a host directory the test gives,
as a kubelet mounts it. A pod is ``Pending`` until its container starts, then ``Running``.
The process's stdout is the pod's log, line by line as it prints (each line stamped with the
time it came, for ``sinceSeconds``); its exit makes the pod Succeeded or Failed and moves the
Job's status on. Deleting the Job deletes its pods gracefully, as the API server and kubelet
do: a running pod gets ``deletionTimestamp`` and its process SIGTERM, and stays (its log
readable, followed streams going on) until the process has exited; a pod not running is
removed at once.

``pods/<name>/log`` answers as the API server does: ``400`` while the container waits to
start, ``sinceSeconds``, ``tailLines`` and ``timestamps`` honoured, and ``follow=true`` served
as a chunked stream (``Transfer-Encoding: chunked``, each write one chunk) that goes on until
the container has exited and its last line is sent. :attr:`JobDouble.cut_follow_after` cuts
every followed stream after that many seconds without the closing chunk, as a restarting API
server or a proxy's timeout does, so that clients must resume.

Every Job created is checked against the Kubernetes 1.33 schemas (``kubernetes-validate``,
strict) before it is accepted, as an API server would refuse a malformed one.

Secrets (create, read, delete) are stored as the API server stores them (``stringData`` folded
into base64 ``data``), also checked against the schemas. A container env var with
``valueFrom.secretKeyRef`` gets the Secret's value; while the Secret (or its key) is missing
the kubelet holds the container, as a real one does (``CreateContainerConfigError``, retried),
until the Secret appears or the Job is deleted. There is no garbage collector: an owned Secret
stays until someone deletes it, so tests see what chaosmem itself deletes.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import kubernetes_validate
import pytest

from tests.kube_double import (
    KubeDouble,
    Request,
    make_pod,
    not_found,
    now_iso,
    status_body,
    write_kubeconfig,
)

REPO = Path(__file__).resolve().parent.parent


@dataclass
class JobDouble(KubeDouble):
    #: volume source name (ConfigMap or PVC) -> host directory mounted in its place
    volumes: dict[str, Path] = field(default_factory=dict)
    work: Path = Path("/nonexistent")
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: each pod's log so far, and its lines with the time each came (for sinceSeconds)
    logs: dict[tuple[str, str], bytearray] = field(default_factory=dict)
    log_lines: dict[tuple[str, str], list[tuple[float, bytes]]] = field(default_factory=dict)
    #: pods whose container process has exited (their log is complete)
    exited: set[tuple[str, str]] = field(default_factory=set)
    #: seconds after which a followed log stream is cut (no closing chunk); None: never
    cut_follow_after: float | None = None
    #: followed log streams served (started), for assertions
    follows: list[tuple[str, str]] = field(default_factory=list)
    processes: dict[tuple[str, str], subprocess.Popen[bytes]] = field(default_factory=dict)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secret_manifests: list[dict[str, Any]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__post_init__()
        jobs = r"/apis/batch/v1/namespaces/([^/]+)/jobs"
        secrets = r"/api/v1/namespaces/([^/]+)/secrets"
        self.route("POST", secrets, self._create_secret)
        self.route("GET", secrets + r"/([^/]+)", self._read_secret)
        self.route("DELETE", secrets + r"/([^/]+)", self._delete_secret)
        self.route("POST", jobs, self._create_job)
        self.route("GET", jobs + r"/([^/]+)(?:/status)?", self._read_job)
        self.route("DELETE", jobs + r"/([^/]+)", self._delete_job)
        self.route("GET", r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", self._read_log)
        #: notified when a log line comes or a container exits (followed streams wait on it)
        self.log_changed = threading.Condition(self.lock)

    # -- secrets ------------------------------------------------------------------------------

    def _create_secret(self, _d: KubeDouble, r: Request, namespace: str) -> tuple[int, Any]:
        secret = copy.deepcopy(r.body)
        try:
            kubernetes_validate.validate(secret, "1.33.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            return 422, status_body(422, "Invalid", f"Secret is invalid: {exc.message}")
        with self.lock:
            if namespace not in self.namespaces:
                return 404, not_found("namespaces", namespace)
            name = secret["metadata"]["name"]
            if (namespace, name) in self.secrets:
                return 409, status_body(409, "AlreadyExists", f'secrets "{name}" already exists')
            self.secret_manifests.append(copy.deepcopy(secret))
            data = dict(secret.get("data") or {})
            for key, value in (secret.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(value.encode()).decode()
            secret["data"] = data
            secret["metadata"]["namespace"] = namespace
            self._stamp(secret)
            self.secrets[(namespace, name)] = secret
            return 201, copy.deepcopy(secret)

    def _read_secret(
        self, _d: KubeDouble, _r: Request, namespace: str, name: str
    ) -> tuple[int, Any]:
        with self.lock:
            secret = self.secrets.get((namespace, name))
            if secret is None:
                return 404, not_found("secrets", name)
            return 200, copy.deepcopy(secret)

    def _delete_secret(
        self, _d: KubeDouble, _r: Request, namespace: str, name: str
    ) -> tuple[int, Any]:
        with self.lock:
            if self.secrets.pop((namespace, name), None) is None:
                return 404, not_found("secrets", name)
        return 200, status_body(200, "Success", f'secrets "{name}" deleted')

    def _env_value(self, namespace: str, item: dict[str, Any]) -> str | None:
        """An env item's value; None while the Secret or key it refers to is missing."""
        if "value" in item:
            return str(item["value"])
        ref = item["valueFrom"]["secretKeyRef"]
        with self.lock:
            secret = self.secrets.get((namespace, ref["name"]))
        data = (secret or {}).get("data") or {}
        if ref["key"] not in data:
            return None
        return base64.b64decode(data[ref["key"]]).decode()

    # -- jobs ---------------------------------------------------------------------------------

    def _create_job(self, _d: KubeDouble, r: Request, namespace: str) -> tuple[int, Any]:
        job = copy.deepcopy(r.body)
        try:
            kubernetes_validate.validate(job, "1.33.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            return 422, status_body(422, "Invalid", f"Job is invalid: {exc.message}")
        with self.lock:
            if namespace not in self.namespaces:
                return 404, not_found("namespaces", namespace)
            name = job["metadata"]["name"]
            if (namespace, name) in self.jobs:
                return 409, status_body(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            self.manifests.append(copy.deepcopy(job))
            job["metadata"]["namespace"] = namespace
            self._stamp(job)
            job["status"] = {"active": 0, "succeeded": 0, "failed": 0}
            self.jobs[(namespace, name)] = job
        spec = job["spec"]
        for index in range(int(spec["completions"])):
            self._start_pod(namespace, job, index)
        return 201, copy.deepcopy(job)

    def _start_pod(self, namespace: str, job: dict[str, Any], index: int) -> None:
        name = f"{job['metadata']['name']}-{index}-x{index:03d}"
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        pod = make_pod(name, namespace, labels=dict(template["metadata"]["labels"]),
                       containers={container["name"]: None})  # fmt: skip
        pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] = str(index)
        pod["metadata"]["labels"]["job-name"] = job["metadata"]["name"]
        pod["spec"]["restartPolicy"] = template["spec"]["restartPolicy"]
        pod["status"]["phase"] = "Pending"  # until the kubelet starts its container
        for status in pod["status"]["containerStatuses"]:
            status.update(ready=False, started=False)
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        self.add_pod(pod)
        with self.lock:
            self.jobs[(namespace, job["metadata"]["name"])]["status"]["active"] += 1
        threading.Thread(
            target=self._run_pod, args=(namespace, name, job, index), daemon=True
        ).start()

    def _container_env(self, namespace: str, container: dict[str, Any]) -> dict[str, str] | None:
        env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG"}}
        for item in container.get("env", []):
            value = self._env_value(namespace, item)
            if value is None:
                return None
            env[item["name"]] = value
        return env

    def _launch(
        self, namespace: str, name: str, job: dict[str, Any], index: int
    ) -> subprocess.Popen[bytes] | None:
        """The pod's container process, once its env can be resolved; None if its Job went."""
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        job_key = (namespace, job["metadata"]["name"])
        while True:
            env = self._container_env(namespace, container)
            if env is not None or self.stopping.is_set():
                break
            with self.lock:
                if job_key not in self.jobs:
                    return None
            time.sleep(0.05)  # the kubelet retrying CreateContainerConfigError
        if env is None:
            return None
        env["JOB_COMPLETION_INDEX"] = str(index)
        mount = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        for volume in template["spec"].get("volumes", []):
            source = (volume.get("configMap") or {}).get("name") or (
                volume.get("persistentVolumeClaim") or {}
            ).get("claimName")
            host = self.volumes.get(source) if source else None
            if host is None:  # emptyDir: a fresh directory per pod
                host = self.work / name / volume["name"]
                host.mkdir(parents=True, exist_ok=True)
            if env.get("CHAOSMEM_CAPTURE_DIR") == mount.get(volume["name"]):
                env["CHAOSMEM_CAPTURE_DIR"] = str(host)
        env["CHAOSMEM_WORK_DIR"] = str(self.work / name / "tmp")
        env["PYTHONPATH"] = str(REPO)
        command = [sys.executable if c == "python" else c for c in container["command"]]
        with self.lock:
            if job_key not in self.jobs or self.stopping.is_set():
                return None
            proc = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO
            )
            self.processes[(namespace, name)] = proc
            self.logs[(namespace, name)] = bytearray()
            self.log_lines[(namespace, name)] = []

            def running(obj: dict[str, Any]) -> None:
                obj["status"]["phase"] = "Running"
                for status in obj["status"]["containerStatuses"]:
                    status.update(ready=True, started=True)
                    status["state"] = {"running": {"startedAt": now_iso()}}

            if (namespace, name) in self.pods:
                self.update_pod(namespace, name, running)
        return proc

    def _run_pod(self, namespace: str, pod: str, job_obj: dict[str, Any], index: int) -> None:
        job = job_obj["metadata"]["name"]
        proc = self._launch(namespace, pod, job_obj, index)
        if proc is None:
            return
        key = (namespace, pod)
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            with self.lock:
                self.logs[key] += line
                self.log_lines[key].append((time.time(), line))
                self.log_changed.notify_all()
        code = proc.wait()
        with self.lock:
            self.exited.add(key)
            self.log_changed.notify_all()
            if key in self.pods:

                def finish(obj: dict[str, Any]) -> None:
                    obj["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
                    for status in obj["status"]["containerStatuses"]:
                        status.update(ready=False, started=False)
                        status["state"] = {"terminated": {"exitCode": code & 0xFF}}

                self.update_pod(namespace, pod, finish)
                if self.pods[key]["metadata"].get("deletionTimestamp"):
                    del self.pods[key]  # the graceful deletion is complete
            record = self.jobs.get((namespace, job))
            if record is None:
                return
            status = record["status"]
            status["active"] -= 1
            status["succeeded" if code == 0 else "failed"] += 1
            if status["active"] == 0:
                kind = "Complete" if status["failed"] == 0 else "Failed"
                status["conditions"] = [{"type": kind, "status": "True"}]
            self._stamp(record)

    def _read_job(self, _d: KubeDouble, _r: Request, namespace: str, name: str) -> tuple[int, Any]:
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                return 404, not_found("jobs.batch", name)
            return 200, copy.deepcopy(job)

    def _delete_job(
        self, _d: KubeDouble, _r: Request, namespace: str, name: str
    ) -> tuple[int, Any]:
        with self.lock:
            job = self.jobs.pop((namespace, name), None)
            if job is None:
                return 404, not_found("jobs.batch", name)
            pods = [
                key for key, pod in self.pods.items()
                if key[0] == namespace and pod["metadata"]["labels"].get("job-name") == name
            ]  # fmt: skip
            for key in pods:
                proc = self.processes.get(key)
                if proc is not None and key not in self.exited:
                    # graceful: the pod stays, its log readable, until its process has exited
                    proc.send_signal(signal.SIGTERM)
                    self.pods[key]["metadata"]["deletionTimestamp"] = now_iso()
                    self._stamp(self.pods[key])
                else:
                    del self.pods[key]
        return 200, status_body(200, "Success", f'jobs.batch "{name}" deleted')

    def _log_check(self, namespace: str, pod: str) -> tuple[int, Any] | None:
        """The API server's refusal of a log request, or None when the log can be read."""
        if (namespace, pod) not in self.pods:
            return 404, not_found("pods", pod)
        if (namespace, pod) not in self.log_lines:
            return 400, status_body(
                400,
                "BadRequest",
                f'container "replay" in pod "{pod}" is waiting to start: ContainerCreating',
            )
        return None

    def _log_since(self, key: tuple[str, str], query: dict[str, list[str]]) -> list[bytes]:
        """The pod's log lines after sinceSeconds and within tailLines, stamped if asked."""
        lines = self.log_lines[key]
        since = query.get("sinceSeconds")
        if since:
            lines = [(t, line) for t, line in lines if t >= time.time() - int(since[0])]
        tail = query.get("tailLines")
        if tail:
            lines = lines[-int(tail[0]) :] if int(tail[0]) else []
        stamped = _true(query.get("timestamps", ["false"])[0])
        return [_stamped(t, line) if stamped else line for t, line in lines]

    def _read_log(self, _d: KubeDouble, r: Request, namespace: str, pod: str) -> tuple[int, Any]:
        with self.lock:
            refused = self._log_check(namespace, pod)
            if refused is not None:
                return refused
            return 200, RawText(b"".join(self._log_since((namespace, pod), r.query)))

    def _follow_log(
        self, handler: BaseHTTPRequestHandler, r: Request, namespace: str, pod: str
    ) -> None:
        """``follow=true``: a chunked stream of the log, from sinceSeconds, until the container
        has exited and its last line is sent (or :attr:`cut_follow_after` cuts it)."""
        key = (namespace, pod)
        with self.lock:
            refused = self._log_check(namespace, pod)
            if refused is None:
                sent = len(self.log_lines[key])
                first = self._log_since(key, r.query)
                self.follows.append(key)
        if refused is not None:
            code, body = refused
            data = json.dumps(body).encode()
            handler.send_response(code)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        cut_at = (
            time.monotonic() + self.cut_follow_after if self.cut_follow_after is not None else None
        )

        def chunk(data: bytes) -> None:
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        try:
            if first:
                chunk(b"".join(first))
            while True:
                with self.lock:
                    fresh = self.log_lines.get(key, [])[sent:]
                    done = key in self.exited or key not in self.log_lines
                    if not fresh and not done and self.server is not None:
                        self.log_changed.wait(0.2)
                        fresh = self.log_lines.get(key, [])[sent:]
                        done = False
                sent += len(fresh)
                if cut_at is not None and time.monotonic() >= cut_at:
                    # NB: cut mid-stream, without the closing chunk: the client must resume
                    handler.close_connection = True
                    return
                if fresh:
                    stamped = _true(r.query.get("timestamps", ["false"])[0])
                    chunk(b"".join(_stamped(t, x) if stamped else x for t, x in fresh))
                elif done or self.server is None:
                    break
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def wait_pods(self, timeout: float = 60) -> None:
        for proc in list(self.processes.values()):
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- serving: as KubeDouble, and plain text for logs ----------------------------------------

    def start(self) -> JobDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                request = Request(
                    self.command, unquote(url.path), parse_qs(url.query),
                    self.headers.get("Content-Type"), body,
                )  # fmt: skip
                with double.lock:
                    double.requests.append(request)
                log = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", request.path)
                if log and _true(request.query.get("follow", ["false"])[0]):
                    double._follow_log(self, request, *log.groups())
                    return
                code, payload = double._dispatch(request)
                if isinstance(payload, RawText):
                    data, kind = payload.data, "text/plain"
                else:
                    data, kind = json.dumps(payload).encode(), "application/json"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        super().stop()


@dataclass(frozen=True)
class RawText:
    data: bytes


def _true(value: str) -> bool:
    """A boolean query parameter as the API server parses it (Go's ``strconv.ParseBool``; the
    Python client sends ``True``)."""
    return value in {"1", "t", "T", "true", "TRUE", "True"}


def _stamped(at: float, line: bytes) -> bytes:
    """A log line as ``timestamps=true`` gives it: RFC 3339 with nanoseconds, a space, the line."""
    moment = datetime.fromtimestamp(at, UTC)
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S.").encode()
        + f"{moment.microsecond:06d}000Z ".encode()
        + line
    )


@pytest.fixture
def kube_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobDouble]:
    """A running :class:`JobDouble` with namespace ``shop``, and ``KUBECONFIG`` pointing at it."""
    double = JobDouble(work=tmp_path / "kubelet")
    double.namespaces.add("shop")
    double.start()
    config = str(write_kubeconfig(tmp_path / "kubeconfig", double.url))
    monkeypatch.setenv("KUBECONFIG", config)
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", config)
    monkeypatch.delenv("KUBERNETES_CONTEXT", raising=False)
    monkeypatch.delenv("CHAOSTOOLKIT_IN_POD", raising=False)
    try:
        yield double
    finally:
        double.stop()
