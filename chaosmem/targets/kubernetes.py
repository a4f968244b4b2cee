"""Resolve ``pod`` and ``deployment`` targets to a :class:`KubeTarget`, and undo their limits.

Target specs (public)::

    {"type": "pod", "namespace": "shop", "label_selector": "app=orders", "container": "orders"}
    {"type": "pod", "namespace": "shop", "name": "orders-7d9f-x2x", "container": "orders"}
    {"type": "deployment", "namespace": "shop", "name": "orders", "container": "orders"}

A pod target takes ``qty`` (how many of the matching pods, the first ones by name) or
``percent`` (of them, rounded up, at least one), and ``mode``: ``"resize"`` (default: in place
through ``pods/resize``) or ``"rollout"`` (patch the owning Deployment's pod template and wait
for the rollout, for clusters without the subresource). ``container`` may be left out when each
pod has exactly one container (and for ``oom_kill_count``, which then counts every container).

Three things not found each fail in their own words: the namespace, a pod matching the
selector (or the named pod), the container in the pod.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.kube.client import Api, NotFound, connect
from chaosmem.kube.oomkills import PodOomWatcher, count_last_ooms, live_oom_watcher
from chaosmem.kube.resize import (
    ANNOTATION,
    ResizeOutcome,
    container_of,
    format_quantity,
    limit_of,
    original_annotation,
    resize_outcome,
    resize_pod,
)
from chaosmem.kube.rollout import patch_template_limit, rollout_outcome
from chaosmem.ledger import Entry, current_run, register_undo
from chaosmem.targets import LimitChange, LimitRefused
from chaosmem.targets.oomwatch import OomEvent
from chaosmem.units import parse_size
from chaosmem.validate import check_choice, check_int, check_keys, check_str

__all__ = ["LIMIT_KIND", "KubeTarget", "resolve_kube"]

LIMIT_KIND = "pod-limit"
MODES = ("resize", "rollout")
_KEYS = {
    "pod": {"namespace", "name", "label_selector", "container", "qty", "percent", "mode"},
    "deployment": {"namespace", "name", "container"},
}
_POLL = 0.2
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
SETTINGS_KEY = "chaosmem_kubernetes"
_MAX_SELECTOR = 4096


def _check_spec(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The normalised spec, or an :class:`InvalidArgument` naming the key at fault."""
    kind = spec["type"]
    check_keys(spec, _KEYS[kind] | {"type"}, name=name, what=f"a {kind} target")
    out: dict[str, Any] = {"type": kind}
    out["namespace"] = check_str(spec.get("namespace", "default"), name=f"{name}.namespace")
    if kind == "deployment" or "name" in spec:
        out["name"] = check_str(spec.get("name"), name=f"{name}.name")
    if kind == "pod":
        if ("name" in spec) == ("label_selector" in spec):
            raise InvalidArgument(
                name, dict(spec), "a pod target with exactly one of 'name' or 'label_selector'"
            )
        if "label_selector" in spec:
            selector = check_str(spec["label_selector"], name=f"{name}.label_selector")
            if len(selector) > _MAX_SELECTOR:
                raise InvalidArgument(
                    f"{name}.label_selector",
                    selector[:64] + "...",
                    "a selector of at most 4096 characters",
                )
            out["label_selector"] = selector
        if "qty" in spec and "percent" in spec:
            raise InvalidArgument(name, dict(spec), "at most one of 'qty' or 'percent'")
        if "qty" in spec:
            out["qty"] = check_int(spec["qty"], name=f"{name}.qty", minimum=1, maximum=10000)
        if "percent" in spec:
            out["percent"] = check_int(
                spec["percent"], name=f"{name}.percent", minimum=1, maximum=100
            )
        if "mode" in spec:
            out["mode"] = check_choice(spec["mode"], name=f"{name}.mode", choices=MODES)
    if "container" in spec:
        out["container"] = check_str(spec["container"], name=f"{name}.container")
    # NB: these become URL path segments: "..", "a/b" or "%2F" must never reach the API.
    for key, pattern, expected in (
        ("namespace", _LABEL, "a namespace name (DNS-1123 label: a-z, 0-9, '-', at most 63)"),
        (
            "name",
            _SUBDOMAIN,
            "an object name (DNS-1123 subdomain: a-z, 0-9, '-', '.', at most 253)",
        ),
        ("container", _LABEL, "a container name (DNS-1123 label: a-z, 0-9, '-', at most 63)"),
    ):
        if key in out and not pattern.fullmatch(out[key]):
            raise InvalidArgument(f"{name}.{key}", out[key], expected)
    return out


@dataclass
class KubeTarget:
    """Pods (or a Deployment's pod template) and one container in them: the MemoryTarget face."""

    api: Api
    target_spec: dict[str, Any]
    pods: list[dict[str, Any]] = field(default_factory=list)
    deployment: dict[str, Any] | None = None
    container: str | None = None
    configuration: Mapping[str, Any] | None = None

    # -- the MemoryTarget face -----------------------------------------------------------

    @property
    def limit_kind(self) -> str:
        return LIMIT_KIND

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.target_spec)

    @property
    def namespace(self) -> str:
        return str(self.target_spec["namespace"])

    @property
    def mode(self) -> str:
        if self.target_spec["type"] == "deployment":
            return "rollout"
        return str(self.target_spec.get("mode", "resize"))

    def describe(self) -> str:
        where = f"container {self.container!r}" if self.container else "every container"
        if self.deployment is not None:
            return f"deployment {self.namespace}/{self.target_spec['name']} ({where})"
        names = ", ".join(p["metadata"]["name"] for p in self.pods)
        return f"pod {self.namespace}/{names} ({where})"

    def check_changeable(self) -> None:
        if self.container is None:
            raise InvalidArgument(
                "target.container",
                None,
                "the container whose limit to change (the pods have several: "
                + ", ".join(c["name"] for c in self._containers())
                + ")",
            )

    def _containers(self) -> list[dict[str, Any]]:
        if self.deployment is not None:
            return list(self.deployment["spec"]["template"]["spec"]["containers"])
        return list(self.pods[0]["spec"]["containers"])

    def _refresh(self) -> None:
        """Read the objects again (their status moves under us)."""
        if self.deployment is not None:
            self.deployment = _get_deployment(self.api, self.namespace, self.target_spec["name"])
        else:
            self.pods = [
                _get_pod(self.api, self.namespace, p["metadata"]["name"]) for p in self.pods
            ]

    def memory_limit(self) -> int | None:
        """The container's limit: the template's for a deployment, the first pod's (by name)
        for pods (NB: pods resized one by one may differ for a moment)."""
        self._refresh()
        name = self.container or self._containers()[0]["name"]
        if self.deployment is not None:
            spec = self.deployment["spec"]["template"]["spec"]
            where = f"deployment {self.namespace}/{self.target_spec['name']}"
        else:
            spec = self.pods[0]["spec"]
            where = f"pod {self.namespace}/{self.pods[0]['metadata']['name']}"
        limit = limit_of(container_of(spec, name, where=where))
        return parse_size(limit, name="memory limit") if limit is not None else None

    def memory_usage(self) -> int:
        """The highest usage of the container among the pods, from metrics.k8s.io (the pod
        closest to its limit is the one that matters)."""
        highest = 0
        for pod in self._pods_now():
            name = pod["metadata"]["name"]
            path = f"pods/{name}"
            body = self.api.call(
                self.api.custom.get_namespaced_custom_object,
                "metrics.k8s.io",
                "v1beta1",
                self.namespace,
                "pods",
                name,
                what=f"metrics of {self.namespace}/{path} (is metrics-server installed?)",
            )
            for container in body.get("containers") or []:
                if self.container is None or container.get("name") == self.container:
                    memory = (container.get("usage") or {}).get("memory", "0")
                    highest = max(highest, parse_size(memory, name="usage"))
        return highest

    def oom_kill_count(self) -> int:
        """OOM kills of the container (of every container when none is named): during a run,
        every kill the run's pod watch saw; without one, the pods' OOMKilled last terminations."""
        watcher = live_oom_watcher(self.spec, current_run())
        if watcher is not None:
            return watcher.count
        return count_last_ooms(self._pods_now(), self.container)

    def per_pod(self) -> list[dict[str, Any]]:
        """One timeline row per pod: its limit and OOM kills (this run's, from the watch, when
        one runs; else the last terminations), so the report draws each pod's line."""
        watcher = live_oom_watcher(self.spec, current_run())
        rows = []
        for pod in self._pods_now():
            meta = pod["metadata"]
            name = f"{meta['namespace']}/{meta['name']}"
            row: dict[str, Any] = {"name": f"{name} ({self.container or 'all'})", "pod": name}
            containers = pod["spec"]["containers"]
            chosen = [c for c in containers if self.container in (None, c["name"])]
            limits = [limit_of(c) for c in chosen]
            row["limit"] = (
                parse_size(limits[0], name="memory limit")
                if len(limits) == 1 and limits[0]
                else None
            )
            if watcher is not None:
                row["oom_kills"] = sum(k["kills"] for k in watcher.kills if k["pod"] == name)
            else:
                row["oom_kills"] = count_last_ooms([pod], self.container)
            rows.append(row)
        return rows

    def _pods_now(self) -> list[dict[str, Any]]:
        if self.deployment is None:
            self._refresh()
            return self.pods
        selector = _selector_of(self.deployment)
        body = self.api.call(
            self.api.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
            what=f"list pods of deployment {self.namespace}/{self.target_spec['name']}",
        )
        return list(body.get("items") or [])

    def watch_oom_kills(
        self, on_kill: Callable[[OomEvent], None], *, spec: Mapping[str, Any]
    ) -> PodOomWatcher:
        """Follow the pods for this run; :meth:`oom_kill_count` reads the watch while it runs."""
        run = current_run()
        if run is None:
            raise ChaosmemError("a pod OOM watch belongs to a run (the chaosmem control sets it)")
        label = dict(spec)

        def report(kill: dict[str, Any]) -> None:
            on_kill(
                OomEvent(
                    at=time.time(),
                    monotonic=time.monotonic(),
                    count=watcher.count,
                    cgroup="",
                    target=label,
                    detail=kill,
                )
            )

        watcher = PodOomWatcher(
            api=self.api,
            spec=self.spec,
            run=run,
            namespace=self.namespace,
            selector=self.pod_selector(),
            names=self.pod_names(),
            container=self.container,
            on_kill=report,
        )
        return watcher.start()

    def pod_selector(self) -> str | None:
        """The label selector that finds the pods (for a watch)."""
        if self.deployment is not None:
            return _selector_of(self.deployment)
        return self.target_spec.get("label_selector")

    def pod_names(self) -> list[str] | None:
        """The pods this target is limited to (None: every pod the selector finds)."""
        if self.deployment is not None:
            return None
        if "name" in self.target_spec:
            return [self.target_spec["name"]]
        if "qty" in self.target_spec or "percent" in self.target_spec:
            return [p["metadata"]["name"] for p in self.pods]
        return None

    # -- changing limits -----------------------------------------------------------------

    def limit_state(self) -> dict[str, Any]:
        """What the undo needs: every object with its uid and the container's original limit."""
        self.check_changeable()
        assert self.container is not None
        self._refresh()
        if self.deployment is not None or self.mode == "rollout":
            deployment = self.deployment or _owner_deployment(self.api, self.pods[0])
            template = deployment["spec"]["template"]["spec"]
            where = f"deployment {self.namespace}/{deployment['metadata']['name']}"
            original = limit_of(container_of(template, self.container, where=where))
            objects = [_object_row(deployment, "Deployment", self.container, original)]
        else:
            objects = []
            for pod in self.pods:
                where = f"pod {self.namespace}/{pod['metadata']['name']}"
                original = limit_of(container_of(pod["spec"], self.container, where=where))
                objects.append(_object_row(pod, "Pod", self.container, original))
        return {"mode": self.mode, "objects": objects}

    def set_memory_limit(self, limit: int | None) -> LimitChange:
        self.check_changeable()
        assert self.container is not None
        state = self.limit_state()
        return apply_limits(self.api, state, self.container, format_quantity(limit), first=True)


def _object_row(
    obj: dict[str, Any], kind: str, container: str, original: str | None
) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "kind": kind,
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta.get("uid"),
        "container": container,
        "original": original,
    }


def _annotate(api: Api, row: dict[str, Any], obj: dict[str, Any]) -> None:
    """Keep the first original limit in the object's annotation (a second tighten keeps it)."""
    originals = original_annotation(obj["metadata"])
    if row["container"] in originals:
        return
    originals[row["container"]] = row["original"]
    body = {"metadata": {"annotations": {ANNOTATION: json.dumps(originals, sort_keys=True)}}}
    _patch(api, row, body)


def _unannotate(api: Api, row: dict[str, Any], obj: dict[str, Any]) -> None:
    originals = original_annotation(obj["metadata"])
    if row["container"] not in originals:
        return
    originals.pop(row["container"])
    value = json.dumps(originals, sort_keys=True) if originals else None
    _patch(api, row, {"metadata": {"annotations": {ANNOTATION: value}}})


def _patch(api: Api, row: dict[str, Any], body: dict[str, Any]) -> None:
    what = f"annotate {row['kind'].lower()} {row['namespace']}/{row['name']}"
    if row["kind"] == "Pod":
        api.call(api.core.patch_namespaced_pod, row["name"], row["namespace"], body, what=what)
    else:
        api.call(
            api.apps.patch_namespaced_deployment, row["name"], row["namespace"], body, what=what
        )


def _get_object(api: Api, row: dict[str, Any]) -> dict[str, Any] | None:
    """The object as it is now, or None when it is gone or was replaced (another uid)."""
    try:
        if row["kind"] == "Pod":
            obj = _get_pod(api, row["namespace"], row["name"])
        else:
            obj = _get_deployment(api, row["namespace"], row["name"])
    except NotFound:
        return None
    if row.get("uid") and obj["metadata"].get("uid") != row["uid"]:
        return None
    return obj


def apply_limits(
    api: Api,
    state: Mapping[str, Any],
    container: str,
    limit: str | None,
    *,
    first: bool,
    restoring: bool = False,
) -> LimitChange:
    """Set ``container``'s limit to ``limit`` on every object of ``state`` (``None``: each
    object's original, when ``restoring``). Returns a pending :class:`LimitChange` to wait on.

    Annotation first, then the limit, object by object: an object whose limit changed always
    carries its original. A refusal of the very first object (``first``) is a refusal of the
    whole change (nothing changed); later ones leave the change partly made, so they are errors
    and the ledger entry stays open for the undo.
    """
    waits: list[tuple[dict[str, Any], str | None, int | None, bool]] = []
    rows: list[dict[str, Any]] = []
    for index, row in enumerate(state["objects"]):
        obj = _get_object(api, row)
        if obj is None:
            rows.append({"object": row["name"], "outcome": "gone", "detail": "replaced or deleted"})
            continue
        wanted = row["original"] if restoring else limit
        spec = obj["spec"] if row["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        current = limit_of(
            container_of(spec, row["container"], where=f"{row['kind'].lower()} {row['name']}")
        )
        decrease = _smaller(wanted, current)
        restarts = _restarts(obj, row["container"]) if row["kind"] == "Pod" else None
        if not restoring:
            _annotate(api, row, obj)
        try:
            if row["kind"] == "Pod":
                resize_pod(api, row["namespace"], row["name"], row["container"], wanted)
            else:
                patch_template_limit(api, row["namespace"], row["name"], row["container"], wanted)
        except LimitRefused as exc:
            if not restoring:  # nothing changed on this object: its annotation goes too
                _unannotate(api, row, _get_object(api, row) or obj)
            if first and index == 0:
                raise
            raise ChaosmemError(
                f"{exc}; the objects before it were changed and stay recorded for the undo"
            ) from None
        if restoring:
            after = _get_object(api, row)
            if after is not None:
                _unannotate(api, row, after)
        waits.append((row, wanted, restarts, decrease))

    def settle(timeout: float) -> LimitChange:
        deadline = time.monotonic() + timeout
        while True:
            outcomes = [_outcome(api, *w) for w in waits]
            done = all(o.settled or o.outcome == "gone" for o in outcomes)
            if done or time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        table = rows + [o.row() for o in outcomes]
        kinds = sorted({o.outcome for o in outcomes}) or ["gone"]
        if not done:
            kinds = ["timeout" if k == "pending" else k for k in kinds]
        overall = kinds[0] if len(kinds) == 1 else "mixed"
        detail = "; ".join(f"{o.pod}: {o.outcome} ({o.detail})" for o in outcomes)
        # NB: deferred, infeasible or error is settled but not applied: the spec holds the new
        # limit, so the entry stays open (state "pending") and the undo puts the original back.
        state: Literal["applied", "pending"] = "applied" if overall == "applied" else "pending"
        return LimitChange(state, overall, detail, table)

    return LimitChange("pending", "pending", "asked; waiting for the cluster", None, settle)


def _outcome(
    api: Api, row: dict[str, Any], wanted: str | None, restarts: int | None, decrease: bool
) -> ResizeOutcome:
    obj = _get_object(api, row)
    name = f"{row['namespace']}/{row['name']}"
    if obj is None:
        return ResizeOutcome(name, "gone", "the object was deleted or replaced")
    if row["kind"] == "Pod":
        return resize_outcome(
            obj, row["container"], wanted, restarts_before=restarts, decrease=decrease
        )
    return rollout_outcome(obj)


def _smaller(new: str | None, old: str | None) -> bool:
    if new is None or old is None:
        return old is None and new is not None
    return parse_size(new, name="limit") < parse_size(old, name="limit")


def _restarts(pod: dict[str, Any], container: str) -> int:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return int(status.get("restartCount") or 0)
    return 0


# -- resolution ------------------------------------------------------------------------------


def _get_pod(api: Api, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = api.call(
        api.core.read_namespaced_pod, name, namespace, what=f"read pod {namespace}/{name}"
    )
    return body


def _get_deployment(api: Api, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = api.call(
        api.apps.read_namespaced_deployment,
        name,
        namespace,
        what=f"read deployment {namespace}/{name}",
    )
    return body


def _selector_of(deployment: dict[str, Any]) -> str:
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _owner_deployment(api: Api, pod: dict[str, Any]) -> dict[str, Any]:
    """The Deployment that owns a pod (through its ReplicaSet), for ``"mode": "rollout"``."""
    meta = pod["metadata"]
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet":
            rs = api.call(
                api.apps.read_namespaced_replica_set,
                ref["name"],
                meta["namespace"],
                what=f"read replicaset {meta['namespace']}/{ref['name']}",
            )
            for owner in (rs.get("metadata") or {}).get("ownerReferences") or []:
                if owner.get("kind") == "Deployment":
                    return _get_deployment(api, meta["namespace"], owner["name"])
    raise ChaosmemError(
        f'pod {meta["namespace"]}/{meta["name"]}: "mode": "rollout" needs a pod owned by a '
        'Deployment (through a ReplicaSet); use {"type": "deployment", ...} or "mode": "resize"'
    )


def _check_namespace(api: Api, namespace: str) -> None:
    try:
        api.call(api.core.read_namespace, namespace, what=f"read namespace {namespace}")
    except NotFound:
        raise NotFound(f"namespace {namespace!r} not found in the cluster") from None


def _pick(pods: list[dict[str, Any]], spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    pods = sorted(pods, key=lambda p: str(p["metadata"]["name"]))
    if "qty" in spec:
        return pods[: spec["qty"]]
    if "percent" in spec:
        return pods[: max(1, math.ceil(len(pods) * spec["percent"] / 100))]
    return pods


def resolve_kube(
    spec: Mapping[str, Any],
    configuration: Mapping[str, Any] | None,
    *,
    name: str,
    secrets: Mapping[str, Any] | None = None,
) -> KubeTarget:
    """Find the target's objects now; each kind of "not found" gets its own message."""
    checked = _check_spec(spec, name)
    api = connect(secrets or client_settings(configuration))
    namespace = checked["namespace"]
    container = checked.get("container")
    _check_namespace(api, namespace)
    if checked["type"] == "deployment":
        try:
            deployment = _get_deployment(api, namespace, checked["name"])
        except NotFound:
            raise NotFound(
                f"deployment {checked['name']!r} not found in namespace {namespace!r}"
            ) from None
        template = deployment["spec"]["template"]["spec"]
        where = f"deployment {namespace}/{checked['name']}'s pod template"
        target = KubeTarget(api, checked, deployment=deployment, configuration=configuration)
    else:
        if "name" in checked:
            try:
                pods = [_get_pod(api, namespace, checked["name"])]
            except NotFound:
                raise NotFound(
                    f"pod {checked['name']!r} not found in namespace {namespace!r}"
                ) from None
        else:
            body = api.call(
                api.core.list_namespaced_pod,
                namespace,
                label_selector=checked["label_selector"],
                what=f"list pods in {namespace}",
            )
            pods = [
                p
                for p in body.get("items") or []
                if not (p.get("metadata") or {}).get("deletionTimestamp")
            ]
            if not pods:
                raise NotFound(
                    f"no pod in namespace {namespace!r} matches label selector "
                    f"{checked['label_selector']!r}"
                )
        pods = _pick(pods, checked)
        template = pods[0]["spec"]
        where = f"pod {namespace}/{pods[0]['metadata']['name']}"
        target = KubeTarget(api, checked, pods=pods, configuration=configuration)
    if container is not None:
        for pod in target.pods:
            container_of(pod["spec"], container, where=f"pod {namespace}/{pod['metadata']['name']}")
        container_of(template, container, where=where)
    elif len(template.get("containers") or []) == 1:
        container = str(template["containers"][0]["name"])
    target.container = container
    return target


@register_undo(LIMIT_KIND)
def _undo_limit(entry: Entry, configuration: Mapping[str, Any] | None) -> str:
    """Put each object's original limit back (ledger first, the annotation when the ledger's is
    missing), the same way it was changed: ``pods/resize`` for pods, the template for
    deployments. A pod that is gone or was replaced needs nothing: its replacement has the
    template's limit."""
    api = connect(client_settings(configuration))
    state = dict(entry.undo)
    objects = []
    for row in state.get("objects", []):
        row = dict(row)
        obj = _get_object(api, row)
        if obj is not None and row.get("original") is None:
            row["original"] = original_annotation(obj["metadata"]).get(row["container"])
        objects.append(row)
    if not objects:
        return "nothing to restore"
    container = str(objects[0]["container"])
    change = apply_limits(
        api, {**state, "objects": objects}, container, None, first=False, restoring=True
    ).wait(60.0)
    said = ", ".join(
        f"{r['namespace']}/{r['name']} -> {r['original'] or 'no limit'}" for r in objects
    )
    return f"memory limit of {container!r} restored ({said}): {change.outcome}"


def client_settings(configuration: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``configuration["chaosmem_kubernetes"]``: the chaosk8s settings (``KUBERNETES_CONTEXT``
    ...) for this run, read by activities and undo handlers alike; None means the environment."""
    settings = (configuration or {}).get(SETTINGS_KEY)
    if settings is None:
        return None
    if not isinstance(settings, Mapping):
        raise InvalidArgument(SETTINGS_KEY, settings, "an object of chaosk8s settings")
    return dict(settings)
