"""Many pods: one replay as a Kubernetes Indexed Job, its pods' logs merged into one result.

Why a Job: a game day against a real fleet needs more load than one machine sends, from inside
the cluster. ``completionMode: Indexed`` gives each pod its shard number
(``JOB_COMPLETION_INDEX``), so pod *k* of *N* replays exactly the requests shard *k* of *N*
would on one machine (:func:`chaosmem.traffic.compile.shard_of`: sessions whole, the rest
round-robin), from the same start time, agreed here in advance (``start_delay`` after the Job
is created) so every pod keeps the one schedule clock. ``backoffLimit: 0``: a pod that fails is
not retried, because a retry would send its requests twice.

Each pod (:mod:`chaosmem.traffic.pod`) writes its per-second lines and its summary as its last
log lines; this module reads them through the API (``read_namespaced_pod_log``), writes them
as ``shards/<k>/`` of the replay and merges them with the same code as worker processes do
(:class:`chaosmem.traffic.shard.ShardMerger`): one replay id, one summary.

The Job is on the ledger (kind ``replay-job``) before it is created; it is deleted when its
results are read, on rollback, and after a crash by ``chaosmem rollback``; its own
``activeDeadlineSeconds`` ends it even if nothing of ours survives to delete it.

Credentials stay out of the Job: its spec carries the options as summaries and journals do
(:meth:`ReplayOptions.public_spec`, masked), because anyone who may ``get jobs`` (or read the
pods) sees it. The masked values (credential headers, a password in ``target_url``, a
credential in ``capture_url``) go into a ``Secret`` of the Job's name, created right after the
Job and owned by it (``ownerReferences``: the garbage collector deletes it with the Job, even
when ``ttlSecondsAfterFinished`` is what deletes the Job). The pod gets it as one env var
(``valueFrom.secretKeyRef``; the kubelet holds the container until the Secret exists) and
merges it back. The Secret is on the Job's ledger entry and deleted with the Job, explicitly:
at the end, on rollback and by ``chaosmem rollback``. No Secret when nothing is secret.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import Entry, Ledger, current_run, register_undo
from chaosmem.secrets import redact_url
from chaosmem.traffic.options import ReplayOptions
from chaosmem.traffic.pod import LOG_SECOND, LOG_SUMMARY, SECRET_ENV
from chaosmem.traffic.results import new_replay_id, replay_dir, set_latest, write_json_atomic
from chaosmem.traffic.shard import ShardMerger
from chaosmem.units import parse_duration

__all__ = [
    "LEDGER_KIND",
    "LOG_SECOND",
    "LOG_SUMMARY",
    "JobScale",
    "job_manifest",
    "parse_scale",
    "run_job",
    "secret_manifest",
    "secret_values",
]

LEDGER_KIND = "replay-job"
CAPTURE_MOUNT = "/capture"
CONTAINER = "replay"
#: The key of the replay's Secret that holds its masked values (JSON, see :func:`secret_values`).
SECRET_KEY = "replay.json"
MAX_PODS = 1000
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SOURCES = ("capture_url", "capture_configmap", "capture_pvc")
_KEYS = {"namespace", "pods", "image", "service_account", "start_delay", "deadline", *_SOURCES}
SCALE_EXPECTED = (
    "an object with namespace, pods, image and one of capture_url, capture_configmap or "
    "capture_pvc (optional: service_account, start_delay, deadline)"
)


class JobScale:
    """``scale``, validated: where and how many pods, and where they find the capture."""

    def __init__(
        self,
        *,
        namespace: str,
        pods: int,
        image: str,
        source: tuple[str, str],
        service_account: str | None,
        start_delay: float,
        deadline: int | None,
    ) -> None:
        self.namespace = namespace
        self.pods = pods
        self.image = image
        self.source = source
        self.service_account = service_account
        self.start_delay = start_delay
        self.deadline = deadline


def _name(value: object, *, name: str, pattern: re.Pattern[str] = _DNS_LABEL) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidArgument(name, value, "a Kubernetes name (lower case letters, digits, '-')")
    return value


def parse_scale(scale: object) -> JobScale:
    """Check ``scale``; every refusal names the key (``scale.pods``...)."""
    if not isinstance(scale, Mapping):
        raise InvalidArgument("scale", scale, SCALE_EXPECTED)
    unknown = sorted(set(map(str, scale)) - _KEYS)
    if unknown:
        raise InvalidArgument("scale", unknown, SCALE_EXPECTED)
    namespace = _name(scale.get("namespace"), name="scale.namespace")
    pods = scale.get("pods")
    if isinstance(pods, bool) or not isinstance(pods, int) or not 1 <= pods <= MAX_PODS:
        raise InvalidArgument("scale.pods", pods, f"a whole number from 1 to {MAX_PODS}")
    image = scale.get("image")
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise InvalidArgument("scale.image", image, "a container image reference with chaosmem")
    given = [key for key in _SOURCES if scale.get(key) is not None]
    if len(given) != 1:
        raise InvalidArgument(
            "scale", given, "exactly one of capture_url, capture_configmap or capture_pvc"
        )
    kind = given[0]
    value = scale[kind]
    if kind == "capture_url":
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
            raise InvalidArgument("scale.capture_url", value, "an http(s) URL of a capture file")
    else:
        _name(value, name=f"scale.{kind}", pattern=_DNS_NAME)
    account = scale.get("service_account")
    if account is not None:
        _name(account, name="scale.service_account", pattern=_DNS_NAME)
    delay = parse_duration(scale.get("start_delay", "30s"), name="scale.start_delay")
    if not 0 <= delay <= 3600:
        raise InvalidArgument("scale.start_delay", scale.get("start_delay"), "0s to 1h")
    deadline = None
    if scale.get("deadline") is not None:
        seconds = parse_duration(scale["deadline"], name="scale.deadline")
        if not 1 <= seconds <= 7 * 86400:
            raise InvalidArgument("scale.deadline", scale["deadline"], "1s to 7 days")
        deadline = int(seconds)
    return JobScale(
        namespace=namespace,
        pods=pods,
        image=image,
        source=(kind, str(value)),
        service_account=account,
        start_delay=delay,
        deadline=deadline,
    )


def job_name(replay_id: str) -> str:
    return "chaosmem-replay-" + re.sub(r"[^a-z0-9]+", "-", replay_id.lower()).strip("-")[:40]


def _deadline(options: ReplayOptions, scale: JobScale) -> int:
    if scale.deadline is not None:
        return scale.deadline
    if options.duration is not None:
        # room to start the pods, the replay, every request's timeout, and the logs
        return int(scale.start_delay + options.duration + options.timeout + 120)
    return 3600


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "chaosmem", "chaosmem/replay": name}


def secret_values(options: ReplayOptions, scale: JobScale) -> dict[str, Any]:
    """What the Job's spec shows masked, with the real values: ``options`` (the
    :meth:`ReplayOptions.secret_spec` arguments) and ``capture_url``, each only when it holds a
    secret; empty when nothing does (then there is no Secret)."""
    values: dict[str, Any] = {}
    secret = options.secret_spec()
    if secret:
        values["options"] = secret
    kind, source = scale.source
    if kind == "capture_url" and redact_url(source) != source:
        values["capture_url"] = source
    return values


def secret_manifest(
    options: ReplayOptions, scale: JobScale, *, replay_id: str, owner_uid: str | None = None
) -> dict[str, Any] | None:
    """The ``v1`` Secret of the Job's name holding :func:`secret_values`, owned by the Job
    (``owner_uid``: the created Job's uid); None when there is nothing secret."""
    values = secret_values(options, scale)
    if not values:
        return None
    name = job_name(replay_id)
    metadata: dict[str, Any] = {"name": name, "namespace": scale.namespace, "labels": _labels(name)}
    if owner_uid is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": owner_uid}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        # NB: never changed, so the kubelet need not watch it
        "immutable": True,
        "stringData": {SECRET_KEY: json.dumps(values, sort_keys=True)},
    }


def job_manifest(
    options: ReplayOptions, scale: JobScale, *, replay_id: str, start_at: float
) -> dict[str, Any]:
    """The ``batch/v1`` Job: ``scale.pods`` indexed pods, each replaying its shard; masked
    options, the real values by reference to :func:`secret_manifest`'s Secret."""
    name = job_name(replay_id)
    labels = _labels(name)
    kind, source = scale.source
    spec = {
        "options": {**options.public_spec(), "workers": 1},
        "replay_id": replay_id,
        "start_at": start_at,
        "shards": scale.pods,
        "capture_url": redact_url(source) if kind == "capture_url" else None,
    }
    env: list[dict[str, Any]] = [
        {"name": "CHAOSMEM_REPLAY", "value": json.dumps(spec, sort_keys=True)},
        {"name": "CHAOSMEM_CAPTURE_DIR", "value": CAPTURE_MOUNT},
    ]
    if secret_values(options, scale):
        env.append(
            {"name": SECRET_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": SECRET_KEY}}}
        )
    volume: dict[str, Any] = {"name": "capture"}
    if kind == "capture_configmap":
        volume["configMap"] = {"name": source}
    elif kind == "capture_pvc":
        volume["persistentVolumeClaim"] = {"claimName": source, "readOnly": True}
    else:
        volume["emptyDir"] = {}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": scale.image,
        "command": ["python", "-m", "chaosmem.traffic.pod"],
        "env": env,
        "volumeMounts": [
            {"name": "capture", "mountPath": CAPTURE_MOUNT, "readOnly": kind != "capture_url"}
        ],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [volume],
    }
    if scale.service_account is not None:
        pod_spec["serviceAccountName"] = scale.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": scale.namespace, "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": scale.pods,
            "parallelism": scale.pods,
            "backoffLimit": 0,
            "activeDeadlineSeconds": _deadline(options, scale),
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def _batch(api: Any) -> Any:
    from kubernetes import client as k8s

    return k8s.BatchV1Api(api.client)


def _connect(configuration: Mapping[str, Any] | None) -> Any:
    from chaosmem.kube.client import connect
    from chaosmem.targets.kubernetes import client_settings

    return connect(client_settings(configuration))


def delete_job(api: Any, namespace: str, name: str) -> str:
    """Delete the Job and its pods (background propagation); a Job already gone is fine."""
    from chaosmem.kube.client import NotFound

    try:
        api.call(
            _batch(api).delete_namespaced_job,
            name,
            namespace,
            propagation_policy="Background",
            what=f"deleting job {namespace}/{name}",
        )
    except NotFound:
        return f"replay job {namespace}/{name} was already gone"
    return f"replay job {namespace}/{name} deleted"


def delete_secret(api: Any, namespace: str, name: str) -> str:
    """Delete the replay's Secret; one already gone (or never created) is fine."""
    from chaosmem.kube.client import NotFound

    try:
        api.call(
            api.core.delete_namespaced_secret,
            name,
            namespace,
            what=f"deleting secret {namespace}/{name}",
        )
    except NotFound:
        return f"replay secret {namespace}/{name} was already gone"
    return f"replay secret {namespace}/{name} deleted"


def _delete_all(api: Any, namespace: str, name: str, secret: str | None) -> str:
    """The Job, then its Secret (even when deleting the Job failed): what was done."""
    try:
        done = delete_job(api, namespace, name)
    except BaseException:
        if secret is not None:
            delete_secret(api, namespace, secret)
        raise
    return done if secret is None else f"{done}; {delete_secret(api, namespace, secret)}"


@register_undo(LEDGER_KIND)
def _undo_job(entry: Entry, configuration: Mapping[str, Any] | None) -> str:
    undo = entry.undo
    secret = undo.get("secret")
    return _delete_all(
        _connect(configuration),
        str(undo["namespace"]),
        str(undo["name"]),
        str(secret) if secret is not None else None,
    )


def _parse_log(text: str) -> tuple[list[str], dict[str, Any] | None]:
    """The per-second lines and the summary a pod printed last (bounded: lines over 1 MiB and
    anything that is not a JSON object are ignored)."""
    seconds: list[str] = []
    summary = None
    for line in text.splitlines():
        if len(line) > 1 << 20:
            continue
        if line.startswith(LOG_SECOND):
            payload = line[len(LOG_SECOND) :]
            try:
                if isinstance(json.loads(payload), dict):
                    seconds.append(payload)
            except ValueError:
                continue
        elif line.startswith(LOG_SUMMARY):
            try:
                data = json.loads(line[len(LOG_SUMMARY) :])
            except ValueError:
                continue
            summary = data if isinstance(data, dict) else None
    return seconds, summary


def _wait_job(api: Any, namespace: str, name: str, *, pods: int, until: float) -> dict[str, Any]:
    while True:
        job = api.call(
            _batch(api).read_namespaced_job_status,
            name,
            namespace,
            what=f"reading job {namespace}/{name}",
        )
        status = job.get("status") or {}
        done = int(status.get("succeeded") or 0) + int(status.get("failed") or 0)
        ended = any(
            c.get("type") in {"Complete", "Failed"} and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ended or done >= pods or time.monotonic() > until:
            return dict(job)
        time.sleep(1.0)


def run_job(
    options: ReplayOptions,
    scale: JobScale,
    *,
    state: Path,
    configuration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the Job, wait for it, merge its pods' results, delete it; the merged summary."""
    api = _connect(configuration)
    rid = new_replay_id()
    out = replay_dir(state, rid)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    set_latest(state, rid)
    start_at = time.time() + scale.start_delay
    manifest = job_manifest(options, scale, replay_id=rid, start_at=start_at)
    name = manifest["metadata"]["name"]
    has_secret = bool(secret_values(options, scale))
    undo: dict[str, Any] = {"namespace": scale.namespace, "name": name}
    if has_secret:
        undo["secret"] = name
    ledger = Ledger(state)
    entry = ledger.record(
        kind=LEDGER_KIND,
        target={"replay_id": rid, "namespace": scale.namespace, "job": name},
        undo=undo,
    )
    outcome = "failed"
    try:
        created = api.call(
            _batch(api).create_namespaced_job,
            scale.namespace,
            manifest,
            what=f"creating job {scale.namespace}/{name}",
        )
        secret = secret_manifest(
            options, scale, replay_id=rid, owner_uid=(created.get("metadata") or {}).get("uid")
        )
        if secret is not None:
            # NB: after the Job, to be owned by it; its pods wait for it (start_delay's room)
            api.call(
                api.core.create_namespaced_secret,
                scale.namespace,
                secret,
                what=f"creating secret {scale.namespace}/{name}",
            )
        deadline = manifest["spec"]["activeDeadlineSeconds"]
        job = _wait_job(
            api, scale.namespace, name, pods=scale.pods, until=time.monotonic() + deadline + 60
        )
        dirs = [out / "shards" / str(n) for n in range(scale.pods)]
        # one line a second of the Job's life at most, the summary, and room for other output
        missing = _collect(api, scale.namespace, name, dirs, max_lines=deadline + 1000)
        base = {
            "replay_id": rid,
            "run": current_run(),
            "pid": None,
            "target_url": redact_url(options.target_url),
            "options": options.public_spec(),
            "workers": scale.pods,
            "started_at": start_at,
            "job": {"namespace": scale.namespace, "name": name, "status": job.get("status")},
        }
        summary = ShardMerger(out, dirs, base).update([True] * scale.pods, final=True)
        if missing:
            summary["state"] = "failed"
            summary["error"] = (
                f"no results from pod(s) of shard(s) {missing} of job {scale.namespace}/{name}"
            )
            write_json_atomic(out / "summary.json", summary)
        outcome = str(summary["state"])
        return summary
    finally:
        try:
            _delete_all(api, scale.namespace, name, name if has_secret else None)
        finally:
            ledger.close(entry, f"replay job {outcome}")


def _collect(api: Any, namespace: str, name: str, dirs: list[Path], *, max_lines: int) -> list[int]:
    """Each pod's log lines into ``shards/<index>/``; the shards with no results."""
    pods = api.call(
        api.core.list_namespaced_pod,
        namespace,
        label_selector=f"chaosmem/replay={name}",
        what=f"listing the pods of job {namespace}/{name}",
    )
    found: set[int] = set()
    for pod in pods.get("items", []):
        meta = pod.get("metadata") or {}
        raw_index = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
        try:
            index = int(str(raw_index))
        except ValueError:
            continue
        if not 0 <= index < len(dirs) or index in found:
            continue
        text = _pod_log(api, namespace, str(meta.get("name")), max_lines=max_lines)
        seconds, summary = _parse_log(text)
        if summary is None:
            continue
        found.add(index)
        directory = dirs[index]
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (directory / "seconds.jsonl").write_text(
            "".join(line + "\n" for line in seconds), encoding="utf-8"
        )
        (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return [n for n in range(len(dirs)) if n not in found]


def _pod_log(api: Any, namespace: str, pod: str, *, max_lines: int) -> str:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from chaosmem.kube.client import REQUEST_TIMEOUT

    try:
        response = api.core.read_namespaced_pod_log(
            pod,
            namespace,
            container=CONTAINER,
            tail_lines=max_lines,  # the lines we read are the last ones: a bounded read
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except (ApiException, HTTPError):
        return ""  # a pod gone or an API error: that shard has no results, and says so
    data: bytes = response.data
    return data.decode("utf-8", errors="replace")
