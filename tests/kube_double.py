"""A Kubernetes API server double on 127.0.0.1: just the endpoints chaosmem uses, over real HTTP.

Why not a general mock: the behaviour that matters is exactly what a generic mock gets wrong.
This double filters lists by label selector (equality and set-based, as the API server does),
applies ``application/strategic-merge-patch+json`` by merge key (containers by ``name``) and
``application/merge-patch+json`` as RFC 7386 (lists replaced whole), answers an unknown
namespace and object with a real ``Status`` 404, and serves ``pods/resize`` the way a kubelet
and API server of a chosen version answer it. So a wrong selector, a merge that would drop a
sibling container or a patch of the wrong subresource fails a test.

Bodies are shaped like a real API server's (``kind``/``apiVersion``, ``metadata.uid``,
``resourceVersion``, full ``containerStatuses`` with image, imageID, containerID, state and
lastState). Every request is logged in :attr:`KubeDouble.requests` for assertions.

Use the :func:`kube` fixture (``from tests.kube_double import kube  # noqa: F401``): it starts a
double, writes a kubeconfig pointing at it and exports ``KUBECONFIG``, so the real ``kubernetes``
client (through ``chaosk8s.create_k8s_api_client``) talks to it. Other concerns (Jobs, pod logs)
can add routes with :meth:`KubeDouble.route`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import re
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

__all__ = [
    "KubeDouble",
    "Request",
    "json_merge",
    "kube",
    "make_pod",
    "matches_selector",
    "strategic_merge",
]

#: Strategic-merge keys of the lists we patch (as in the Kubernetes OpenAPI x-kubernetes-patch-merge-key).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumes": "name",
    "conditions": "type",
    "containerStatuses": "name",
    "resizePolicy": "resourceName",
}


def now_iso(t: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if t is None else t, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- patches ---------------------------------------------------------------------------------


def json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = json_merge(out.get(key), value)
    return out


def strategic_merge(target: Any, patch: Any, key: str | None = None) -> Any:
    """Kubernetes strategic merge patch for the fields in :data:`MERGE_KEYS`: lists of objects
    merge element by element on their merge key; ``{"$patch": "delete"}`` removes an element."""
    if isinstance(patch, dict):
        out = dict(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if name.startswith("$"):
                continue
            if value is None:
                out.pop(name, None)
            else:
                out[name] = strategic_merge(out.get(name), value, name)
        return out
    if isinstance(patch, list) and key in MERGE_KEYS and isinstance(target, list):
        merge_key = MERGE_KEYS[key]
        out_list = [copy.deepcopy(item) for item in target]
        for item in patch:
            if not isinstance(item, dict) or merge_key not in item:
                raise ValueError(f"{key}: element without merge key {merge_key!r}: {item!r}")
            index = next(
                (i for i, old in enumerate(out_list) if old.get(merge_key) == item[merge_key]),
                None,
            )
            if item.get("$patch") == "delete":
                if index is not None:
                    out_list.pop(index)
            elif index is None:
                out_list.append(strategic_merge({}, item))
            else:
                out_list[index] = strategic_merge(out_list[index], item)
        return out_list
    return copy.deepcopy(patch)


# -- label selectors -------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def matches_selector(labels: dict[str, str], selector: str | None) -> bool:
    """Whether ``labels`` satisfy a label selector (``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``,
    ``a notin (x)``, ``a``, ``!a``), all requirements ANDed, as the API server reads it."""
    if not selector:
        return True
    for req in _split_requirements(selector):
        if m := _SET_RE.match(req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            ok = labels.get(key) in values if op == "in" else labels.get(key) not in values
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            ok = labels.get(key) != value
        elif "==" in req or "=" in req:
            key, value = (s.strip() for s in re.split("==?", req, maxsplit=1))
            ok = labels.get(key) == value
        elif req.startswith("!"):
            ok = req[1:].strip() not in labels
        else:
            ok = req in labels
        if not ok:
            return False
    return True


# -- objects ---------------------------------------------------------------------------------


def make_pod(
    name: str,
    namespace: str = "shop",
    *,
    labels: dict[str, str] | None = None,
    containers: dict[str, str | None] | None = None,
    resize_policy: str = "NotRequired",
    owner: str | None = None,
    node: str = "node-1",
) -> dict[str, Any]:
    """A running pod as the API server returns it; ``containers`` maps name -> memory limit."""
    containers = containers if containers is not None else {"orders": "1Gi"}
    spec_containers, statuses = [], []
    for cname, limit in containers.items():
        resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
        if limit is not None:
            resources["limits"] = {"memory": limit}
        spec_containers.append(
            {
                "name": cname,
                "image": f"registry.example/{cname}:1.4.2",
                "imagePullPolicy": "IfNotPresent",
                "resources": copy.deepcopy(resources),
                "resizePolicy": [
                    {"resourceName": "cpu", "restartPolicy": "NotRequired"},
                    {"resourceName": "memory", "restartPolicy": resize_policy},
                ],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
            }
        )
        statuses.append(
            {
                "name": cname,
                "image": f"registry.example/{cname}:1.4.2",
                "imageID": f"registry.example/{cname}@sha256:{uuid.uuid4().hex * 2}",
                "containerID": f"containerd://{uuid.uuid4().hex * 2}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now_iso()}},
                "lastState": {},
                "allocatedResources": copy.deepcopy(resources.get("requests", {})),
                "resources": copy.deepcopy(resources),
                "volumeMounts": [],
            }
        )
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels or {"app": "orders"}),
        "annotations": {},
    }
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "controller": True}
        ]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": {
            "containers": spec_containers,
            "nodeName": node,
            "restartPolicy": "Always",
            "serviceAccountName": "default",
        },
        "status": {
            "phase": "Running",
            "qosClass": "Burstable",
            "podIP": "10.244.1.17",
            "hostIP": "172.18.0.3",
            "startTime": now_iso(),
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now_iso()},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now_iso()},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_iso()},
            ],
            "containerStatuses": statuses,
        },
    }


def oom_kill(pod: dict[str, Any], container: str, *, finished: float | None = None) -> None:
    """What the kubelet reports after the kernel OOM-killed ``container`` and it restarted."""
    for status in pod["status"]["containerStatuses"]:
        if status["name"] == container:
            old_id = status["containerID"]
            started = status["state"].get("running", {}).get("startedAt", now_iso())
            status["lastState"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "OOMKilled",
                    "startedAt": started,
                    "finishedAt": now_iso(finished),
                    "containerID": old_id,
                }
            }
            status["restartCount"] += 1
            status["containerID"] = f"containerd://{uuid.uuid4().hex * 2}"
            status["state"] = {"running": {"startedAt": now_iso()}}
            return
    raise KeyError(container)


# -- the server ------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any


#: A resize reaction gets (double, pod) after the spec was patched and sets the pod's status.
Reaction = Callable[["KubeDouble", dict[str, Any]], None]


def apply_resize(double: KubeDouble, pod: dict[str, Any]) -> None:
    """The kubelet resized in place: status resources follow the spec, no resize condition;
    a container that stands as a local cgroup gets the new memory limit on the real kernel."""
    by_name = {c["name"]: c for c in pod["spec"]["containers"]}
    for status in pod["status"]["containerStatuses"]:
        status["resources"] = copy.deepcopy(by_name[status["name"]].get("resources", {}))
        group = double.exec_cgroups.get(
            (pod["metadata"]["namespace"], pod["metadata"]["name"], status["name"])
        )
        if group is not None:
            limit = status["resources"].get("limits", {}).get("memory")
            group.set_memory_limit(parse_bytes(limit) if limit else None)
    pod["status"]["conditions"] = [
        c
        for c in pod["status"]["conditions"]
        if c["type"] not in {"PodResizePending", "PodResizeInProgress"}
    ]


def condition_reaction(kind: str, reason: str, message: str) -> Reaction:
    """The kubelet answered with a resize condition (1.33+): Deferred, Infeasible or Error."""

    def react(_double: KubeDouble, pod: dict[str, Any]) -> None:
        conditions = [c for c in pod["status"]["conditions"] if c["type"] != kind]
        conditions.append(
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now_iso(),
                "lastProbeTime": None,
            }
        )
        pod["status"]["conditions"] = conditions

    return react


def legacy_status_reaction(value: str) -> Reaction:
    """Before 1.33 the outcome was the string ``status.resize``."""

    def react(_double: KubeDouble, pod: dict[str, Any]) -> None:
        pod["status"]["resize"] = value

    return react


@dataclass
class KubeDouble:
    """The double's state: namespaces, objects by (namespace, name), and how it behaves."""

    namespaces: set[str] = field(default_factory=lambda: {"default", "kube-system"})
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deployments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    hpas: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    replicasets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    metrics: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    #: ``False``: a cluster older than 1.32, where ``pods/resize`` does not exist (404).
    resize_subresource: bool = True
    #: Minor version of the server (33: memory decreases with NotRequired are refused).
    minor: int = 34
    #: What the kubelet does after a resize, per pod name (default :func:`apply_resize`).
    reactions: dict[str, Reaction] = field(default_factory=dict)
    extra_routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = field(
        default_factory=list
    )
    #: (namespace, pod, container) -> the local cgroup that stands for the container in exec.
    exec_cgroups: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    exec_processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Executables the containers' images lack (exec answers as a runtime does).
    missing_executables: set[str] = field(default_factory=set)
    lock: threading.RLock = field(default_factory=threading.RLock)
    changed: threading.Condition = field(init=False)
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    version: int = 1000
    server: ThreadingHTTPServer | None = None
    url: str = ""

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    # -- state helpers ----------------------------------------------------------------------

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.version)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        meta.setdefault("generation", 1)

    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.namespaces.add(pod["metadata"]["namespace"])
            self._stamp(pod)
            key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            kind = "MODIFIED" if key in self.pods else "ADDED"
            self.pods[key] = pod
            self._event(kind, pod)
            return pod

    def update_pod(
        self, namespace: str, name: str, change: Callable[[dict[str, Any]], None]
    ) -> None:
        """Change a pod as the kubelet would (status), and tell watchers."""
        with self.lock:
            pod = self.pods[(namespace, name)]
            change(pod)
            self._stamp(pod)
            self._event("MODIFIED", pod)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        self.events.append((self.version, kind, copy.deepcopy(obj)))
        self.changed.notify_all()

    def add_deployment(
        self,
        name: str,
        namespace: str = "shop",
        *,
        replicas: int = 2,
        labels: dict[str, str] | None = None,
        containers: dict[str, str | None] | None = None,
    ) -> dict[str, Any]:
        labels = labels or {"app": name}
        template = make_pod("template", namespace, labels=labels, containers=containers)
        deployment = {
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels),
                "annotations": {},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {"containers": template["spec"]["containers"]},
                },
            },
            "status": {},
        }
        replicaset = {
            "kind": "ReplicaSet",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": f"{name}-7d9f5c",
                "namespace": namespace,
                "labels": dict(labels),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "controller": True,
                    }
                ],
            },
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)}},
        }
        with self.lock:
            self.namespaces.add(namespace)
            self._stamp(deployment)
            self._stamp(replicaset)
            self._roll(deployment)
            self.deployments[(namespace, name)] = deployment
            self.replicasets[(namespace, replicaset["metadata"]["name"])] = replicaset
        return deployment

    def _roll(self, deployment: dict[str, Any]) -> None:
        """The deployment controller finished rolling out the current generation."""
        replicas = deployment["spec"]["replicas"]
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }

    def add_hpa(
        self, name: str, namespace: str, *, target: str, current: int, desired: int
    ) -> dict[str, Any]:
        hpa = {
            "kind": "HorizontalPodAutoscaler",
            "apiVersion": "autoscaling/v2",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                "minReplicas": 2,
                "maxReplicas": 10,
            },
            "status": {
                "currentReplicas": current,
                "desiredReplicas": desired,
                "conditions": [
                    {
                        "type": "AbleToScale",
                        "status": "True",
                        "reason": "ReadyForNewScale",
                        "lastTransitionTime": now_iso(),
                    }
                ],
            },
        }
        with self.lock:
            self.namespaces.add(namespace)
            self._stamp(hpa)
            self.hpas[(namespace, name)] = hpa
        return hpa

    def route(self, method: str, pattern: str, handler: Callable[..., Any]) -> None:
        """Add an endpoint: ``handler(double, request, *groups)`` returns (status, body)."""
        self.extra_routes.append((method, re.compile(pattern), handler))

    def patches(self, suffix: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH" and r.path.endswith(suffix)]

    # -- serving ----------------------------------------------------------------------------

    def start(self) -> KubeDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

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
                    self.command,
                    unquote(url.path),
                    parse_qs(url.query),
                    self.headers.get("Content-Type"),
                    body,
                )
                with double.lock:
                    double.requests.append(request)
                if (
                    request.path.endswith("/exec")
                    and self.headers.get("Upgrade", "").lower() == "websocket"
                ):
                    double._exec(self, request)
                    return
                if request.query.get("watch", ["false"])[0] in {
                    "true",
                    "True",
                    "1",
                    "t",
                    "T",
                    "TRUE",
                }:
                    double._watch(self, request)
                    return
                try:
                    code, payload = double._dispatch(request)
                except ValueError as exc:
                    code, payload = 422, status_body(422, "Invalid", str(exc))
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="kube-double", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        for process in self.exec_processes:  # by PID, what exec started and left running
            if process.poll() is None:
                process.kill()
                process.wait()
        # what the shipped engines wrote "in the container" (here: this host's /tmp)
        for request in self.requests:
            argv = request.query.get("command", [])
            if "--status" in argv:
                status = Path(argv[argv.index("--status") + 1])
                for path in status.parent.glob(status.name.removesuffix(".json") + "*"):
                    path.unlink(missing_ok=True)
        if self.server is not None:
            with self.lock:
                self.changed.notify_all()
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _watch(self, handler: BaseHTTPRequestHandler, request: Request) -> None:
        """Stream pod events after ``resourceVersion`` until ``timeoutSeconds`` (closes then)."""
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", request.path)
        handler.send_response(200 if match else 404)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Connection", "close")
        handler.end_headers()
        if not match:
            return
        namespace = match.group(1)
        selector = request.query.get("labelSelector", [None])[0]
        since = int(request.query.get("resourceVersion", ["0"])[0] or 0)
        until = time.monotonic() + float(request.query.get("timeoutSeconds", ["30"])[0])
        try:
            while time.monotonic() < until and self.server is not None:
                with self.lock:
                    fresh = [e for e in self.events if e[0] > since]
                    if not fresh:
                        self.changed.wait(min(0.5, max(0.0, until - time.monotonic())))
                        continue
                for version, kind, obj in fresh:
                    since = version
                    meta = obj["metadata"]
                    if meta["namespace"] != namespace or not matches_selector(
                        meta.get("labels", {}), selector
                    ):
                        continue
                    line = json.dumps({"type": kind, "object": obj}) + "\n"
                    handler.wfile.write(line.encode())
                    handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True

    # -- exec: a WebSocket speaking v4.channel.k8s.io ---------------------------------------

    def _exec(self, handler: BaseHTTPRequestHandler, request: Request) -> None:
        """Run the exec'd command in the local cgroup standing for the container.

        Channel 0 (stdin) feeds the process; its stdout and stderr go back on 1 and 2; when it
        ends, channel 3 carries the Status (exit code as a real API server words it) and the
        socket closes. When the client's socket closes, the process's stdin is closed, as the
        container runtime does.
        """
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec", request.path)
        assert m is not None
        namespace, pod = m.groups()
        container = request.query.get("container", [""])[0]
        argv = request.query.get("command", [])
        key = base64.b64encode(
            hashlib.sha1(
                (
                    handler.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
                ).encode()
            ).digest()
        ).decode()
        handler.send_response(101)
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", key)
        handler.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        handler.end_headers()
        handler.close_connection = True
        sock = handler.connection
        send_lock = threading.Lock()

        def send(opcode: int, payload: bytes) -> None:
            head = bytes([0x80 | opcode])
            n = len(payload)
            if n < 126:
                head += bytes([n])
            elif n < 65536:
                head += bytes([126]) + struct.pack("!H", n)
            else:
                head += bytes([127]) + struct.pack("!Q", n)
            with send_lock, contextlib.suppress(OSError):
                sock.sendall(head + payload)

        def status(body: dict[str, Any]) -> None:
            send(2, b"\x03" + json.dumps(body).encode())
            send(8, struct.pack("!H", 1000))

        group = self.exec_cgroups.get((namespace, pod, container))
        if (namespace, pod) not in self.pods or group is None:
            status(status_body(404, "NotFound", f'pods "{pod}" not found'))
            return
        if argv and argv[0] in self.missing_executables:
            body = status_body(
                500,
                "InternalError",
                (
                    "Internal error occurred: error executing command in container: failed to exec in "
                    f'container: OCI runtime exec failed: exec failed: unable to start container process: exec: "{argv[0]}": '
                    "executable file not found in $PATH: unknown"
                ),
            )
            status(body)
            return
        process = group.spawn(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        with self.lock:
            self.exec_processes.append(process)

        def pump(stream: Any, channel: int) -> None:
            for chunk in iter(lambda: stream.read1(65536), b""):
                send(2, bytes([channel]) + chunk)

        pumps = [
            threading.Thread(target=pump, args=(process.stdout, 1), daemon=True),
            threading.Thread(target=pump, args=(process.stderr, 2), daemon=True),
        ]
        for thread in pumps:
            thread.start()

        def read_frames() -> None:
            rfile = handler.rfile
            try:
                while True:
                    head = rfile.read(2)
                    if len(head) < 2:
                        break
                    opcode, n = head[0] & 0x0F, head[1] & 0x7F
                    if n == 126:
                        n = struct.unpack("!H", rfile.read(2))[0]
                    elif n == 127:
                        n = struct.unpack("!Q", rfile.read(8))[0]
                    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                    data = bytes(b ^ mask[i % 4] for i, b in enumerate(rfile.read(n)))
                    if opcode == 8:
                        break
                    if opcode in (1, 2) and data[:1] == b"\x00" and process.stdin is not None:
                        with contextlib.suppress(OSError):
                            process.stdin.write(data[1:])
                            process.stdin.flush()
            except OSError:
                pass
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()

        reader = threading.Thread(target=read_frames, daemon=True)
        reader.start()
        code = process.wait()
        for thread, stream in zip(pumps, (process.stdout, process.stderr), strict=True):
            thread.join(5)
            if stream is not None and not thread.is_alive():
                stream.close()  # read to its end: closed here, not left to the collector
        if code == 0:
            status({"metadata": {}, "status": "Success"})
        else:
            exit_code = 128 - code if code < 0 else code  # a signal, as the runtime reports it
            status(
                {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"command terminated with non-zero exit code: exit status {exit_code}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
                }
            )
        reader.join(5)

    def _dispatch(self, r: Request) -> tuple[int, Any]:
        for method, pattern, custom in self.extra_routes:
            if r.method == method and (m := pattern.fullmatch(r.path)):
                result: tuple[int, Any] = custom(self, r, *m.groups())
                return result
        with self.lock:
            if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)", r.path):
                if r.method == "GET" and m.group(1) in self.namespaces:
                    return 200, {
                        "kind": "Namespace",
                        "apiVersion": "v1",
                        "metadata": {"name": m.group(1)},
                        "status": {"phase": "Active"},
                    }
                return 404, not_found("namespaces", m.group(1))
            if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", r.path):
                return 200, self._list(self.pods, m.group(1), r, "PodList", "v1")
            if m := re.fullmatch(
                r"/api/v1/namespaces/([^/]+)/pods/([^/]+)(/resize|/status)?", r.path
            ):
                return self._pod(r, m.group(1), m.group(2), m.group(3))
            if m := re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/replicasets/([^/]+)", r.path):
                rs = self.replicasets.get((m.group(1), m.group(2)))
                if rs is None or r.method != "GET":
                    return 404, not_found("replicasets.apps", m.group(2))
                return 200, copy.deepcopy(rs)
            if m := re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)", r.path):
                return self._deployment(r, m.group(1), m.group(2))
            if m := re.fullmatch(
                r"/apis/autoscaling/v2/namespaces/([^/]+)/horizontalpodautoscalers/([^/]+)", r.path
            ):
                hpa = self.hpas.get((m.group(1), m.group(2)))
                if hpa is None:
                    return 404, not_found("horizontalpodautoscalers.autoscaling", m.group(2))
                return 200, copy.deepcopy(hpa)
            if m := re.fullmatch(
                r"/apis/metrics.k8s.io/v1beta1/namespaces/([^/]+)/pods/([^/]+)", r.path
            ):
                usage = self.metrics.get((m.group(1), m.group(2)))
                if usage is None:
                    return 404, not_found("pods.metrics.k8s.io", m.group(2))
                return 200, {
                    "kind": "PodMetrics",
                    "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {"name": m.group(2), "namespace": m.group(1)},
                    "timestamp": now_iso(),
                    "window": "15s",
                    "containers": [
                        {"name": name, "usage": {"cpu": "10m", "memory": memory}}
                        for name, memory in usage.items()
                    ],
                }
        return 404, status_body(
            404, "NotFound", f"the server could not find the requested resource ({r.path})"
        )

    def _list(
        self,
        store: dict[tuple[str, str], dict[str, Any]],
        namespace: str,
        r: Request,
        kind: str,
        api: str,
    ) -> dict[str, Any]:
        selector = r.query.get("labelSelector", [None])[0]
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(store.items())
            if ns == namespace and matches_selector(obj["metadata"].get("labels", {}), selector)
        ]
        return {
            "kind": kind,
            "apiVersion": api,
            "metadata": {"resourceVersion": str(self.version)},
            "items": items,
        }

    def _patched(self, obj: dict[str, Any], r: Request) -> dict[str, Any]:
        if r.content_type == "application/strategic-merge-patch+json":
            return strategic_merge(obj, r.body)  # type: ignore[no-any-return]
        if r.content_type == "application/merge-patch+json":
            return json_merge(obj, r.body)  # type: ignore[no-any-return]
        if r.content_type == "application/json-patch+json" and isinstance(r.body, list):
            raise ValueError("json-patch is not supported by this double")
        raise ValueError(f"unsupported patch content type {r.content_type!r}")

    def _pod(self, r: Request, namespace: str, name: str, sub: str | None) -> tuple[int, Any]:
        pod = self.pods.get((namespace, name))
        if sub == "/resize" and not self.resize_subresource:
            return 404, status_body(
                404, "NotFound", "the server could not find the requested resource"
            )
        if pod is None:
            return 404, not_found("pods", name)
        if r.method == "GET":
            return 200, copy.deepcopy(pod)
        if r.method != "PATCH":
            return 405, status_body(405, "MethodNotAllowed", r.method)
        patched = self._patched(pod, r)
        if sub == "/resize":
            error = self._validate_resize(pod, patched)
            if error:
                return 422, status_body(422, "Invalid", error)
            pod["spec"] = patched["spec"]
            self.reactions.get(name, apply_resize)(self, pod)
        else:
            if patched["spec"] != pod["spec"]:
                return 422, status_body(
                    422,
                    "Invalid",
                    f'Pod "{name}" is invalid: spec: Forbidden: pod updates may not change fields '
                    "other than `spec.containers[*].image`, ... (use the resize subresource for resources)",
                )
            pod["metadata"] = patched["metadata"]
        self._stamp(pod)
        self._event("MODIFIED", pod)
        return 200, copy.deepcopy(pod)

    def _validate_resize(self, old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """What the API server's validation refuses on ``pods/resize``."""
        name = old["metadata"]["name"]
        if {k: v for k, v in new["spec"].items() if k != "containers"} != {
            k: v for k, v in old["spec"].items() if k != "containers"
        } or new["metadata"] != old["metadata"]:
            return f'Pod "{name}" is invalid: only resources of containers can be resized'
        olds = {c["name"]: c for c in old["spec"]["containers"]}
        if [c["name"] for c in new["spec"]["containers"]] != list(olds):
            return f'Pod "{name}" is invalid: spec.containers: Forbidden: containers cannot be added or removed'
        for index, container in enumerate(new["spec"]["containers"]):
            before = olds[container["name"]]
            strip = lambda c: {k: v for k, v in c.items() if k != "resources"}  # noqa: E731
            if strip(container) != strip(before):
                return f'Pod "{name}" is invalid: spec.containers[{index}]: Forbidden: only resources may change'
            old_mem = before.get("resources", {}).get("limits", {}).get("memory")
            new_mem = container.get("resources", {}).get("limits", {}).get("memory")
            policy = {
                p["resourceName"]: p["restartPolicy"] for p in container.get("resizePolicy", [])
            }
            if (
                self.minor <= 33
                and old_mem
                and new_mem
                and parse_bytes(new_mem) < parse_bytes(old_mem)
                and policy.get("memory", "NotRequired") == "NotRequired"
            ):
                return (
                    f'Pod "{name}" is invalid: spec.containers[{index}].resources.limits[memory]: '
                    "Forbidden: memory limits cannot be decreased unless resizePolicy is RestartContainer"
                )
        return None

    def _deployment(self, r: Request, namespace: str, name: str) -> tuple[int, Any]:
        deployment = self.deployments.get((namespace, name))
        if deployment is None:
            return 404, not_found("deployments.apps", name)
        if r.method == "GET":
            return 200, copy.deepcopy(deployment)
        if r.method != "PATCH":
            return 405, status_body(405, "MethodNotAllowed", r.method)
        patched = self._patched(deployment, r)
        if patched["spec"] != deployment["spec"]:
            patched["metadata"]["generation"] = deployment["metadata"]["generation"] + 1
        self.deployments[(namespace, name)] = patched
        self._stamp(patched)
        self._roll(patched)
        return 200, copy.deepcopy(patched)


def parse_bytes(text: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def not_found(resource: str, name: str) -> dict[str, Any]:
    body = status_body(404, "NotFound", f'{resource} "{name}" not found')
    body["details"] = {"name": name, "kind": resource.split(".")[0]}
    return body


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": url}}],
                "users": [{"name": "tester", "user": {"token": "double-token"}}],
                "contexts": [
                    {"name": "double", "context": {"cluster": "double", "user": "tester"}}
                ],
                "current-context": "double",
            }
        )
    )
    return path


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeDouble]:
    """A running double with namespace ``shop``, and ``KUBECONFIG`` pointing at it."""
    double = KubeDouble()
    double.namespaces.add("shop")
    double.start()
    config = str(write_kubeconfig(tmp_path / "kubeconfig", double.url))
    monkeypatch.setenv("KUBECONFIG", config)
    # NB: the kubernetes client reads $KUBECONFIG once, when it is imported; chaosk8s checks the
    # variable at call time but loads the import-time default. A test sets both.
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", config)
    monkeypatch.delenv("KUBERNETES_CONTEXT", raising=False)
    monkeypatch.delenv("CHAOSTOOLKIT_IN_POD", raising=False)
    try:
        yield double
    finally:
        double.stop()
