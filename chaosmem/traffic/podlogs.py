"""The pods of a replay Job, followed live: each pod's log into ``shards/<k>/`` as it is printed.

A pod (:mod:`chaosmem.traffic.pod`) prints one line a second while it replays
(``chaosmem-second {"seq": n, ...}``) and its summary last (``chaosmem-summary {...}``). A
:class:`PodFollower` per shard turns that log into the files a local worker writes
(``shards/<k>/seconds.jsonl`` as the lines come, ``shards/<k>/summary.json``: a running one
tallied from the lines (:class:`~chaosmem.traffic.results.SecondsTally`), the pod's own at the
end), so :class:`~chaosmem.traffic.shard.ShardMerger` merges pods exactly as it merges worker
processes, live, into the replay's one ``seconds.jsonl`` and ``summary.json``.

Why a followed stream (``read_namespaced_pod_log(follow=True, _preload_content=False)``, read
as it comes) and not polling, nor one read at the end:

* a line reaches the state dir within moments of being printed, so the run's timeline and the
  probes (``status_ratio``, ``replay_summary``) see the pods' traffic during the run;
* a followed log survives the kubelet's **log rotation** (the kubelet reopens the new file and
  goes on), while a read (at the end, or a poll with ``since_seconds``) only sees the current
  file: what rotated away before it is lost. A long replay rotates its log;
* polling costs a request through the API server to a kubelet per pod per period, and still
  needs the deduplication below; a follow is one idle request per pod between lines.

A stream does break (the API server restarts, a proxy's idle timeout, our read timeout while
the pod compiles and waits for its start time, when it prints nothing). It is resumed with
``since_seconds`` reaching back to the last line we received plus :data:`MARGIN`: the overlap
is read again and dropped by its ``seq`` (lines carry it so that nothing counts twice). A
``seq`` that jumps ahead (lines rotated away while we were reconnecting) leaves ``"lost": true``
lines in their place, so the shards stay aligned second by second; the pod's own summary, read
last, still has its exact totals.

**Restarts**: a replay pod runs with ``restartPolicy: Never`` in a Job with ``backoffLimit: 0``,
because a restarted (or replacement) pod would send its shard's requests a second time. So the
follower stays with the pod it found for its index (by uid) and never adopts another one; when
that pod ends (or is deleted), its stream ends after its last line, which is checked by reading
once more (``since_seconds``) after the pod is seen terminated; then the shard has ended.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from chaosmem.state import open_private
from chaosmem.traffic.pod import LOG_SECOND, LOG_SUMMARY
from chaosmem.traffic.results import SecondsTally, write_json_atomic

__all__ = ["CONTAINER", "MARGIN", "PodFollower", "logs_client", "parse_line"]

CONTAINER = "replay"
#: Seconds of log read again when a stream is resumed: more than a line can take to arrive.
MARGIN = 10.0
#: A stream with nothing to read this long is resumed (seconds): the pods print every second
#: once they replay, but not while they compile and wait for the start time.
IDLE = 30.0
#: Between attempts while a pod's container is not running yet, or the API did not answer.
RETRY = 1.0
#: A second's line may come this long (seconds) after the second, by the shared clock, ends; a
#: ``seq`` further ahead than that is no second of this replay, and is skipped.
LATE = 120.0
#: A log line longer than this is not ours, and is skipped.
MAX_LINE = 1 << 20
_TERMINAL = {"Succeeded", "Failed"}


def parse_line(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """``("second", line)`` or ``("summary", summary)`` for a pod's own lines; None for any
    other output (a warning, a traceback, garbage, a line too long, JSON that is no object)."""
    if len(raw) > MAX_LINE:
        return None
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    for prefix, kind in ((LOG_SECOND, "second"), (LOG_SUMMARY, "summary")):
        if text.startswith(prefix):
            try:
                data = json.loads(text[len(prefix) :])
            except (ValueError, RecursionError):
                return None
            return (kind, data) if isinstance(data, dict) else None
    return None


def logs_client(api: Any, streams: int) -> Any:
    """An :class:`~chaosmem.kube.client.Api` of its own for ``streams`` followed logs.

    Why: each followed log holds a connection for as long as its pod runs; the shared client's
    pool (``cpu_count * 5``) would open more and warn about each one it then discards.
    """
    from kubernetes import client as k8s

    from chaosmem.kube.client import Api

    settings = copy.copy(api.client.configuration)
    settings.connection_pool_maxsize = max(int(streams) + 4, 8)
    return Api(k8s.ApiClient(settings))


class PodFollower:
    """Shard ``index``'s pod log, followed in a thread into ``directory``.

    :attr:`ended` is set once nothing more will come: the pod's summary was read, or the pod
    ended (or is gone) and its log was read to the end, or :meth:`close` was called.
    """

    def __init__(self, api: Any, namespace: str, index: int, directory: Path, *, started_at: float):
        self.api = api
        self.namespace = namespace
        self.index = index
        self.directory = directory
        self.started_at = started_at
        self.pod: str | None = None
        self.uid: str | None = None
        self.next_seq = 0
        #: per-second lines that never reached us (a gap in ``seq``)
        self.lost = 0
        #: the pod's own summary was read: this shard's results are complete
        self.final = False
        #: why the last attempt to read the log failed, when it did (for the summary's error)
        self.problem: str | None = None
        self.tally = SecondsTally()
        self.ended = threading.Event()
        self._closing = threading.Event()
        self._response: Any = None
        self._last_rx: float | None = None
        self._thread: threading.Thread | None = None
        self._dirty = False  # lines written since the last flush
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seconds = open_private(directory / "seconds.jsonl", "ab")

    @property
    def attached(self) -> bool:
        return self._thread is not None

    def attach(self, pod: str, uid: str | None) -> None:
        """Start following ``pod`` (once; a follower never switches pods, see the module doc)."""
        if self._thread is not None or self.ended.is_set():
            return
        self.pod, self.uid = pod, uid
        self._thread = threading.Thread(
            target=self._run, name=f"chaosmem-podlog-{self.index}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop following now (the stream in progress is cut); :attr:`ended` is set."""
        self._closing.set()
        response = self._response
        if response is not None:
            # NB: unblocks the thread's read from here; close() alone would not wake it
            with contextlib.suppress(Exception):
                response.shutdown()
        if self._thread is None:
            self._finish()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing.is_set() and not self.final:
                outcome = self._read(follow=True)
                if outcome == "gone" or self.final:
                    break
                if outcome == "eof":
                    phase = self._phase()
                    if phase is None or phase in _TERMINAL:
                        # the container ended: one more read catches what the stream may have
                        # missed if it broke just before the end (the overlap is dropped by seq)
                        if not self.final and phase is not None:
                            self._read(follow=False)
                        break
                self._closing.wait(RETRY if outcome != "eof" else 0.1)
        finally:
            self._finish()

    def _finish(self) -> None:
        with contextlib.suppress(OSError):
            self._seconds.close()
        self.ended.set()

    def _phase(self) -> str | None:
        """The pod's phase; None when it is gone (or is another pod of the same name now)."""
        from chaosmem.kube.client import KubeError, NotFound

        assert self.pod is not None
        try:
            pod = self.api.call(
                self.api.core.read_namespaced_pod,
                self.pod,
                self.namespace,
                what=f"reading pod {self.namespace}/{self.pod}",
            )
        except NotFound:
            return None
        except KubeError as exc:
            self.problem = str(exc)
            return "Unknown"
        if self.uid is not None and (pod.get("metadata") or {}).get("uid") != self.uid:
            return None
        return str((pod.get("status") or {}).get("phase") or "Unknown")

    def _read(self, *, follow: bool) -> str:
        """One request for the log: ``"eof"`` (it ended), ``"gone"`` (no such pod),
        ``"retry"`` (not running yet, or the API did not answer)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        assert self.pod is not None
        kwargs: dict[str, Any] = {"container": CONTAINER, "follow": follow}
        if self._last_rx is not None:
            kwargs["since_seconds"] = max(1, math.ceil(time.monotonic() - self._last_rx + MARGIN))
        try:
            response = self.api.core.read_namespaced_pod_log(
                self.pod,
                self.namespace,
                _preload_content=False,
                _request_timeout=(5.0, IDLE),
                **kwargs,
            )
        except ApiException as exc:
            if exc.status == 404:
                return "gone"
            # NB: 400 while the container waits (image pull, its Secret): the usual start
            self.problem = f"reading the log of pod {self.pod}: {exc.status} {exc.reason}"
            return "retry"
        except (HTTPError, OSError) as exc:
            self.problem = f"reading the log of pod {self.pod}: {type(exc).__name__}"
            return "retry"
        self._response = response
        if self._closing.is_set():  # NB: close() came between the request and the line above
            with contextlib.suppress(Exception):
                response.shutdown()
        try:
            self._consume(response)
        except (HTTPError, OSError, ValueError) as exc:
            # a broken or timed-out stream: resumed by the caller (from _last_rx)
            self.problem = f"the log stream of pod {self.pod} broke: {type(exc).__name__}"
            return "retry"
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()
        return "eof"

    def _consume(self, response: Any) -> None:
        pending = b""
        skipping = False  # inside a line over MAX_LINE: dropped up to its newline
        while not self.final:
            chunk = response.read1(1 << 16)
            if not chunk:
                return
            self._last_rx = time.monotonic()
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            for raw in lines:
                if skipping:
                    skipping = False
                    continue
                self._line(raw)
            if len(pending) > MAX_LINE:
                pending, skipping = b"", True
            self._flush()

    def _line(self, raw: bytes) -> None:
        parsed = parse_line(raw)
        if parsed is None or self.final:
            return
        kind, data = parsed
        if kind == "summary":
            self._flush()
            write_json_atomic(self.directory / "summary.json", data)
            self.final = True
            return
        seq = data.get("seq", self.next_seq)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < self.next_seq:
            return  # read before: the overlap of a resumed stream
        if seq > max(time.time() - self.started_at, 0) + LATE:
            return  # not a second of this replay's clock (yet): a bogus line, not a gap
        for lost in range(self.next_seq, seq):
            # second ``lost`` of the shared clock never reached us: a line that says so keeps
            # the shards aligned second by second (ShardMerger pairs their n-th lines)
            self.lost += 1
            self._write(
                {
                    "t": round(self.started_at + lost + 1, 3),
                    "elapsed": float(lost + 1),
                    "sent": 0,
                    "completed": 0,
                    "status": {},
                    "errors": {},
                    "lag_p99_ms": None,
                    "lost": True,
                }
            )
        self.next_seq = seq + 1
        self.tally.add(data)
        self._write(data)

    def _write(self, line: dict[str, Any]) -> None:
        self._seconds.write(json.dumps(line, sort_keys=True).encode() + b"\n")
        self._dirty = True

    def _flush(self) -> None:
        if self._dirty:
            self._seconds.flush()
            if not self.final:
                write_json_atomic(
                    self.directory / "summary.json",
                    self.tally.summary(started_at=self.started_at),
                )
            self._dirty = False
