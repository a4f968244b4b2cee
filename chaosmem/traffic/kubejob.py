"""Many pods: one replay as a Kubernetes Indexed Job, its pods' logs merged into one result.

Why a Job: a game day against a real fleet needs more load than one machine sends, from inside
the cluster. ``completionMode: Indexed`` gives each pod its shard number
(``JOB_COMPLETION_INDEX``), so pod *k* of *N* replays exactly the requests shard *k* of *N*
would on one machine (:func:`chaosmem.traffic.compile.shard_of`: sessions whole, the rest
round-robin), from the same start time, agreed here in advance (``start_delay`` after the Job
is created) so every pod keeps the one schedule clock. ``backoffLimit: 0``: a pod that fails is
not retried, because a retry would send its requests twice.

Each pod (:mod:`chaosmem.traffic.pod`) prints a line for each second as it ends, and its summary
as its last log line. While the Job runs, each pod's log is followed through the API
(:mod:`chaosmem.traffic.podlogs`: ``read_namespaced_pod_log(follow=True)``, resumed when a
stream breaks) into ``shards/<k>/`` of the replay, and merged once a second with the same code
as worker processes (:class:`chaosmem.traffic.shard.ShardMerger`) into the replay's one
``seconds.jsonl`` and ``summary.json``: the run's timeline and probes see the pods' traffic as
it happens. One replay id, one summary.

The Job is on the ledger (kind ``replay-job``) before it is created; it is deleted once its
pods' results are read, when the replay is stopped (SIGTERM or Ctrl-C to this process: the
pods get SIGTERM from their kubelets and print their last lines, which are still merged), on
rollback, and after a crash by ``chaosmem rollback``; its own ``activeDeadlineSeconds`` ends it
even if nothing of ours survives to delete it. A background replay (``wait: false``) runs
:func:`run_job` in a worker process (:mod:`chaosmem.traffic.background`).

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

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.interrupts import StopRequest, stop_on_signals
from chaosmem.ledger import Entry, Ledger, current_run, register_undo
from chaosmem.secrets import redact_url
from chaosmem.state import private_dir
from chaosmem.traffic.options import ReplayOptions
from chaosmem.traffic.pod import LOG_SECOND, LOG_SUMMARY, SECRET_ENV
from chaosmem.traffic.podlogs import CONTAINER, PodFollower, logs_client
from chaosmem.traffic.results import new_replay_id, replay_dir, set_latest, write_json_atomic
from chaosmem.traffic.shard import ShardMerger
from chaosmem.units import parse_duration

__all__ = [
    "LEDGER_KIND",
    "LOG_SECOND",
    "LOG_SUMMARY",
    "JobScale",
    "job_deadline",
    "job_manifest",
    "parse_scale",
    "public_scale",
    "record_job",
    "run_job",
    "secret_manifest",
    "secret_values",
]

LEDGER_KIND = "replay-job"
CAPTURE_MOUNT = "/capture"
#: How often the Job is looked at and its pods' lines merged (seconds).
TICK = 1.0
#: After the Job ended, how long its pods' last lines may take to arrive: a hang guard.
DRAIN = 60.0
#: After a stop (the Job deleted), how long its pods have to print their last lines: the
#: kubelet sends them SIGTERM, and a replay stops within moments of it.
STOP_DRAIN = 20.0
#: Failed reads of the Job's status in a row before the replay gives up on it.
MAX_FAILURES = 5
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


def public_scale(scale: JobScale) -> dict[str, Any]:
    """``scale`` as ``replay_traffic`` takes it, with a ``capture_url`` password masked: what
    may be written to disk (a background replay's ``spec.json``)."""
    kind, source = scale.source
    public: dict[str, Any] = {
        "namespace": scale.namespace,
        "pods": scale.pods,
        "image": scale.image,
        kind: redact_url(source) if kind == "capture_url" else source,
        "start_delay": scale.start_delay,
    }
    if scale.service_account is not None:
        public["service_account"] = scale.service_account
    if scale.deadline is not None:
        public["deadline"] = scale.deadline
    return public


def job_deadline(options: ReplayOptions, scale: JobScale) -> int:
    """The Job's ``activeDeadlineSeconds``: ``scale.deadline``, else room for the whole replay."""
    return _deadline(options, scale)


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


def record_job(ledger: Ledger, options: ReplayOptions, scale: JobScale, *, replay_id: str) -> Entry:
    """The Job's ledger entry (its Secret too, when there is one): written before either exists."""
    name = job_name(replay_id)
    undo: dict[str, Any] = {"namespace": scale.namespace, "name": name}
    if secret_values(options, scale):
        undo["secret"] = name
    return ledger.record(
        kind=LEDGER_KIND,
        target={"replay_id": replay_id, "namespace": scale.namespace, "job": name},
        undo=undo,
    )


def _job_ended(job: Mapping[str, Any], pods: int) -> bool:
    status = job.get("status") or {}
    done = int(status.get("succeeded") or 0) + int(status.get("failed") or 0)
    return done >= pods or any(
        c.get("type") in {"Complete", "Failed"} and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _attach(api: Any, namespace: str, name: str, followers: list[PodFollower]) -> None:
    """Give each follower still without a pod the pod of its completion index, once it exists."""
    from chaosmem.kube.client import KubeError

    if all(f.attached for f in followers):
        return
    try:
        pods = api.call(
            api.core.list_namespaced_pod,
            namespace,
            label_selector=f"chaosmem/replay={name}",
            what=f"listing the pods of job {namespace}/{name}",
        )
    except KubeError:
        return  # looked for again on the next tick
    for pod in pods.get("items", []):
        meta = pod.get("metadata") or {}
        raw_index = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
        try:
            index = int(str(raw_index))
        except ValueError:
            continue
        if 0 <= index < len(followers) and meta.get("name"):
            followers[index].attach(str(meta["name"]), meta.get("uid"))


def _all_ended(followers: list[PodFollower]) -> bool:
    """Whether every shard's pod log is read to its end (a pod never seen has nothing to read)."""
    return all(f.ended.is_set() or not f.attached for f in followers)


class _Follow:
    """How the follow loop ended: the Job's last status (None: the Job is gone) and whether
    its deadline passed with the Job still running."""

    def __init__(self) -> None:
        self.job: dict[str, Any] | None = {}
        self.timed_out = False


def _follow(
    api: Any,
    scale: JobScale,
    name: str,
    followers: list[PodFollower],
    merger: ShardMerger,
    stop: StopRequest,
    *,
    until: float,
) -> _Follow:
    """Merge the pods' lines once a :data:`TICK` until the Job has ended and its pods' logs are
    read, a stop is asked for, the Job is gone, or ``until`` (monotonic) has passed."""
    from chaosmem.kube.client import KubeError, NotFound

    result = _Follow()
    ended_at: float | None = None
    failures = 0
    while True:
        _attach(api, scale.namespace, name, followers)
        try:
            result.job = api.call(
                _batch(api).read_namespaced_job_status,
                name,
                scale.namespace,
                what=f"reading job {scale.namespace}/{name}",
            )
            failures = 0
        except NotFound:
            result.job = None
            return result
        except KubeError:
            failures += 1  # NB: one failed read is no reason to abandon a running Job
            if failures >= MAX_FAILURES:
                raise
        merger.update([f.ended.is_set() for f in followers])
        if result.job is not None and _job_ended(result.job, scale.pods):
            ended_at = ended_at if ended_at is not None else time.monotonic()
            if _all_ended(followers) or time.monotonic() - ended_at > DRAIN:
                return result
        if time.monotonic() > until:
            result.timed_out = True
            return result
        if stop.wait(TICK):
            return result


def _drain(followers: list[PodFollower], merger: ShardMerger, *, within: float) -> None:
    """Give the pods ``within`` seconds to print their last lines (they stop on SIGTERM, which
    the Job's deletion sends them), merging as the lines come."""
    deadline = time.monotonic() + within
    while not _all_ended(followers) and time.monotonic() < deadline:
        time.sleep(0.1)
        merger.update([f.ended.is_set() for f in followers])


def run_job(
    options: ReplayOptions,
    scale: JobScale,
    *,
    state: Path,
    configuration: Mapping[str, Any] | None = None,
    replay_id: str | None = None,
    entry: Entry | str | None = None,
) -> dict[str, Any]:
    """Create the Job, follow its pods' logs into one live result, delete it; the merged summary.

    ``replay_id`` and ``entry`` come from a background replay
    (:func:`chaosmem.traffic.background.start_background`), which recorded the Job on the ledger
    before it started this process; without them this makes its own.

    SIGTERM or SIGINT (when this is the main thread) stops the replay: the Job is deleted, its
    pods get SIGTERM from their kubelets and print their last lines, which are merged (within
    :data:`STOP_DRAIN`) into a summary that says ``"stopped"``; then the signal goes on to the
    handler in place before (see :mod:`chaosmem.interrupts`). A Job deleted by someone else
    while it runs (a rollback) ends the same way and then raises :class:`ChaosmemError`.
    """
    api = _connect(configuration)
    rid = replay_id or new_replay_id()
    out = private_dir(replay_dir(state, rid))
    if replay_id is None:
        set_latest(state, rid)
    ledger = Ledger(state)
    if entry is None:
        entry = record_job(ledger, options, scale, replay_id=rid)
    start_at = time.time() + scale.start_delay
    manifest = job_manifest(options, scale, replay_id=rid, start_at=start_at)
    name = manifest["metadata"]["name"]
    secret_name = name if secret_values(options, scale) else None
    dirs = [out / "shards" / str(n) for n in range(scale.pods)]
    base: dict[str, Any] = {
        "replay_id": rid,
        "run": current_run(),
        "pid": None,
        "target_url": redact_url(options.target_url),
        "options": options.public_spec(),
        "workers": scale.pods,
        "started_at": start_at,
        "job": {"namespace": scale.namespace, "name": name, "status": None},
    }
    merger = ShardMerger(out, dirs, base)
    followers: list[PodFollower] = []
    logs_api: Any = None
    stop = StopRequest()
    deleted = False
    outcome = "failed"
    # NB: the merged summary is final, the Job deleted and the ledger entry closed before a
    # signal is handed on (Chaos Toolkit's interrupt, KeyboardInterrupt, SIG_DFL's exit in a
    # worker process), so everything up to it happens inside the block.
    with stop_on_signals(stop.set, work="replay_traffic"):
        try:
            try:
                created = api.call(
                    _batch(api).create_namespaced_job,
                    scale.namespace,
                    manifest,
                    what=f"creating job {scale.namespace}/{name}",
                )
                secret = secret_manifest(
                    options,
                    scale,
                    replay_id=rid,
                    owner_uid=(created.get("metadata") or {}).get("uid"),
                )
                if secret is not None:
                    # NB: after the Job, to be owned by it; its pods wait for it (start_delay)
                    api.call(
                        api.core.create_namespaced_secret,
                        scale.namespace,
                        secret,
                        what=f"creating secret {scale.namespace}/{name}",
                    )
                merger.update([False] * scale.pods)  # the replay runs: its summary says so
                logs_api = logs_client(api, scale.pods)
                followers = [
                    PodFollower(logs_api, scale.namespace, n, d, started_at=start_at)
                    for n, d in enumerate(dirs)
                ]
                deadline = manifest["spec"]["activeDeadlineSeconds"]
                until = time.monotonic() + scale.start_delay + deadline + 60
                followed = _follow(api, scale, name, followers, merger, stop, until=until)
                base["job"]["status"] = (followed.job or {}).get("status")
                cut_short = stop.requested or followed.job is None or followed.timed_out
                # NB: deleting the Job is what stops pods still running (SIGTERM): they print
                # their last lines, which the followers still read
                _delete_all(api, scale.namespace, name, secret_name)
                deleted = True
                _drain(followers, merger, within=STOP_DRAIN if cut_short else 0.0)
            except BaseException as exc:
                _final(merger, followers, state="failed", error=_why(exc))
                raise
            summary = _final(
                merger,
                followers,
                state="stopped" if stop.requested or followed.job is None else None,
                error=(
                    f"job {scale.namespace}/{name} did not end within its deadline"
                    if followed.timed_out
                    else None
                ),
            )
            outcome = str(summary["state"])
        finally:
            for follower in followers:
                follower.close()
            try:
                if not deleted:
                    _delete_all(api, scale.namespace, name, secret_name)
            finally:
                ledger.close(entry, f"replay job {outcome}")
                until_joined = time.monotonic() + 5.0
                for follower in followers:
                    # NB: a thread inside an API call (not a stream) ends with its timeout
                    follower.join(max(until_joined - time.monotonic(), 0.0))
                if logs_api is not None:
                    logs_api.client.close()
    if followed.job is None and not stop.requested:
        raise ChaosmemError(
            f"replay job {scale.namespace}/{name} was deleted while it ran (a rollback?); "
            f"what its pods printed is merged in {out}"
        )
    return summary


def _why(exc: BaseException) -> str:
    if isinstance(exc, Exception):
        return str(exc) if isinstance(exc, ChaosmemError) else f"{type(exc).__name__}: {exc}"
    return f"interrupted ({type(exc).__name__})"


def _final(
    merger: ShardMerger, followers: list[PodFollower], *, state: str | None, error: str | None
) -> dict[str, Any]:
    """The merged summary, final (written once: a reader never sees a state corrected after):
    what every shard's pod printed, and which said nothing.

    ``state`` overrides what the shards say (``"stopped"``: cut short by us, ``"failed"``); a
    shard whose pod never printed its summary fails a replay that was not stopped.
    """
    for follower in followers:
        follower.close()
    lost = {str(f.index): f.lost for f in followers if f.lost}
    if lost:
        merger.base["lost_seconds"] = lost
    summary = merger.update([True] * len(merger.dirs), final=True, write=False)
    missing = [f.index for f in followers if not f.final]
    problems = [error] if error else []
    if missing:
        job = merger.base.get("job") or {}
        why = "; ".join(dict.fromkeys(f.problem for f in followers if f.problem and not f.final))
        problems.append(
            f"no results from the pod(s) of shard(s) {missing} of job "
            f"{job.get('namespace')}/{job.get('name')}" + (f" ({why})" if why else "")
        )
    if state is None and (missing or error):
        state = "failed"
    if state == "stopped" and summary["state"] == "failed":
        state = "failed"  # a pod that failed on its own says more than our stop
    if state is not None or problems:
        summary["state"] = state or summary["state"]
        summary["error"] = "; ".join(p for p in [summary.get("error"), *problems] if p) or None
        if summary["state"] != "running" and summary.get("ended_at") is None:
            summary["ended_at"] = round(time.time(), 3)
    write_json_atomic(merger.out / "summary.json", summary)
    return summary
