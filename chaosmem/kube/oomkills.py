"""Count OOM kills of pods' containers: from last terminations, or every one a run's watch saw.

A container status keeps only its *last* termination, so a container OOM-killed twice during a
run shows one ``lastState`` at the end. During a run the control starts a :class:`PodOomWatcher`
that follows the pods through a watch and records each termination whose reason is
``OOMKilled``, deduplicated on (containerID, finishedAt); when ``restartCount`` rose by more
than one between two events and the last state is an OOM kill, the rises count (a kill followed
by another restart is never missed). Without a run, :func:`count_last_ooms` counts the last
terminations. A sidecar's kills count only when no container is named.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import watch
from urllib3.exceptions import HTTPError

from chaosmem.kube.client import Api

__all__ = ["PodOomWatcher", "count_last_ooms", "live_oom_watcher"]

logger = logging.getLogger("chaostoolkit")
_WATCHERS: dict[tuple[str, str], PodOomWatcher] = {}
_WATCHERS_LOCK = threading.Lock()


def _key(spec: Mapping[str, Any]) -> str:
    return json.dumps(dict(spec), sort_keys=True)


def live_oom_watcher(spec: Mapping[str, Any], run: str | None) -> PodOomWatcher | None:
    """The watcher the current run started for this target spec, when there is one."""
    if run is None:
        return None
    with _WATCHERS_LOCK:
        return _WATCHERS.get((run, _key(spec)))


def _statuses(pod: Mapping[str, Any], container: str | None) -> Iterable[dict[str, Any]]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if container is None or status.get("name") == container:
            yield status


def _oom_termination(status: Mapping[str, Any]) -> dict[str, Any] | None:
    terminated = (status.get("lastState") or {}).get("terminated") or {}
    return dict(terminated) if terminated.get("reason") == "OOMKilled" else None


def count_last_ooms(pods: Iterable[Mapping[str, Any]], container: str | None) -> int:
    """OOMKilled last terminations of ``container`` (of every container when None)."""
    return sum(
        1 for pod in pods for status in _statuses(pod, container) if _oom_termination(status)
    )


@dataclass
class PodOomWatcher:
    """Follows the pods of a target for one run; ``count`` is the OOM kills seen since start."""

    api: Api
    spec: dict[str, Any]
    run: str
    namespace: str
    selector: str | None
    names: list[str] | None
    container: str | None
    on_kill: Callable[[dict[str, Any]], None] | None = None
    count: int = 0
    kills: list[dict[str, Any]] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PodOomWatcher:
        """Take the baseline (kills before the run do not count), then watch on a thread."""
        body = self._list()
        for pod in body.get("items") or []:
            self._observe(pod, baseline=True)
        version = (body.get("metadata") or {}).get("resourceVersion")
        self._thread = threading.Thread(
            target=self._run, args=(version,), name="chaosmem-pod-oomwatch", daemon=True
        )
        self._thread.start()
        with _WATCHERS_LOCK:
            _WATCHERS[(self.run, _key(self.spec))] = self
        return self

    def _list(self) -> dict[str, Any]:
        body: dict[str, Any] = self.api.call(
            self.api.core.list_namespaced_pod,
            self.namespace,
            label_selector=self.selector,
            what=f"list pods in {self.namespace}",
        )
        return body

    def check_now(self) -> None:
        """A last look (the end of a run): kills the watch has not delivered yet still count."""
        try:
            for pod in self._list().get("items") or []:
                self._observe(pod, baseline=False)
        except Exception as exc:
            logger.debug("chaosmem: last OOM look at %s failed: %s", self.namespace, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with _WATCHERS_LOCK:
            _WATCHERS.pop((self.run, _key(self.spec)), None)

    def _run(self, version: str | None) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.api.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=version,
                    timeout_seconds=2,
                    _request_timeout=(5.0, 10.0),
                ):
                    obj = event["raw_object"]
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if event["type"] in {"ADDED", "MODIFIED"}:
                        self._observe(obj, baseline=False)
                    if self._stop.is_set():
                        stream.stop()
                        break
            except (HTTPError, OSError, ValueError) as exc:
                logger.debug("chaosmem: pod watch in %s restarts: %s", self.namespace, exc)
                self._stop.wait(0.5)
            except Exception as exc:  # an API error (410 Gone): relist and go on
                logger.debug("chaosmem: pod watch in %s relists: %s", self.namespace, exc)
                version = None
                self._stop.wait(0.5)

    def _observe(self, pod: Mapping[str, Any], *, baseline: bool) -> None:
        meta = pod.get("metadata") or {}
        if self.names is not None and meta.get("name") not in self.names:
            return
        uid = str(meta.get("uid") or meta.get("name"))
        with self._lock:
            for status in _statuses(pod, self.container):
                ident = (uid, str(status.get("name")))
                restarts = int(status.get("restartCount") or 0)
                rise = restarts - self._restarts.get(ident, restarts)
                self._restarts[ident] = restarts
                term = _oom_termination(status)
                if term is None:
                    continue
                mark = (str(term.get("containerID")), str(term.get("finishedAt")))
                if mark in self._seen:
                    continue
                self._seen.add(mark)
                if baseline:
                    continue
                new = max(1, rise)
                self.count += new
                kill = {
                    "pod": f"{meta.get('namespace')}/{meta.get('name')}",
                    "container": status.get("name"),
                    "finished_at": term.get("finishedAt"),
                    "kills": new,
                    "seen_at": time.time(),
                }
                self.kills.append(kill)
                if self.on_kill is not None:
                    self.on_kill(kill)
