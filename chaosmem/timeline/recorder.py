"""The recorder: a background thread that samples the run, and a place to mark its moments.

Every record is a JSON object with a unix time ``t`` and a ``kind``:

- ``{"kind": "sample", "t": …, "targets": [{"name", "limit", "usage", "peak", "peak_from",
  "oom_kills"}], "stress":
  {"bytes", "stressors"}, "traffic": {"seconds", "sent", "completed", "status", "errors",
  "lag_p99_ms"}}`` — keys only for sources that had something to say;
- ``{"kind": "mark", "t": …, "event": "activity-start" | "activity-end" | "oom-kill" | …, …}``;
  each of these three is followed by a sample at once, so the limit just before and after an
  activity, and memory right after a kill, are recorded whatever the interval;
- ``{"kind": "stats", "t": …, "samples": n, "cpu_seconds": s, "interval": i}`` — last, so a
  report can show what the recording cost.

Records are appended to ``timeline.jsonl`` as they happen (flushed, not fsynced: a crash loses at
most the page cache, and the journal copy is the primary one), so a run killed mid-way still
leaves its timeline beside the ledger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import current_run
from chaosmem.state import open_private, private_dir, state_dir
from chaosmem.timeline.sources import Resolver, Source, SourceSetup, build_sources

__all__ = ["MIN_INTERVAL", "TIMELINE_FILE", "Recorder", "read_timeline"]

logger = logging.getLogger("chaostoolkit")

TIMELINE_FILE = "timeline.jsonl"
#: Below this the recorder itself would become the load being measured.
MIN_INTERVAL = 0.05
#: How long stop() waits for the last sample and the sources' teardown (seconds).
STOP_TIMEOUT = 5.0
#: Marks followed by a sample at once.
SAMPLED_EVENTS = frozenset({"activity-start", "activity-end", "oom-kill"})
#: How long a mark waits for its sample (seconds; one takes about a millisecond).
MARK_SAMPLE_WAIT = 1.0


class Recorder:
    """Samples ``targets`` every ``interval`` seconds into ``directory/timeline.jsonl``.

    ``sources`` replaces the registered sources (tests, benchmarks); ``resolve`` replaces
    ``chaosmem.targets.resolve_target`` for the built-in targets source; ``extra`` reaches every
    source factory as ``SourceSetup.extra`` (the control's arguments for the ``go`` and
    ``prometheus`` sources, and the run's secrets), with ``run_dir`` added. A source may have a
    ``close()``: it ends its work in flight just before the last sample, on the sampling thread.
    """

    def __init__(
        self,
        *,
        directory: Path,
        interval: float = 1.0,
        targets: list[dict[str, Any]],
        configuration: dict[str, Any] | None,
        resolve: Resolver | None = None,
        sources: list[Source] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not math.isfinite(interval)
            or interval < MIN_INTERVAL
        ):
            raise InvalidArgument(
                "interval", interval, f"a number of seconds of at least {MIN_INTERVAL}"
            )
        if not isinstance(targets, list) or not all(isinstance(t, Mapping) for t in targets):
            raise InvalidArgument("targets", targets, "a list of target objects")
        self.directory = Path(directory)
        self.interval = float(interval)
        self.configuration = configuration
        if (
            not targets
            and configuration
            and isinstance(configuration.get("chaosmem_target"), Mapping)
        ):
            targets = [dict(configuration["chaosmem_target"])]
        self.targets = [dict(t) for t in targets]
        self._resolve = resolve
        self._given_sources = sources
        self.extra = dict(extra or {})
        self._sources: list[Source] = []
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._asked: list[threading.Event] = []
        self._finished = threading.Event()
        self._stopped = False
        self.stalled = False
        self._thread: threading.Thread | None = None
        self._file: IO[str] | None = None
        self.samples = 0
        self.cpu_seconds = 0.0

    @property
    def path(self) -> Path:
        return self.directory / TIMELINE_FILE

    def _open(self) -> None:
        if self._file is None and not self._stopped:
            private_dir(self.directory)
            self._file = open_private(self.path, "a", encoding="utf-8")

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str)
        with self._lock:
            self._records.append(record)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            elif self._stopped:
                # NB: a late mark (an OOM watcher's last callback) still reaches the file, but
                # opens it only for this line: nothing is left open after stop().
                with contextlib.suppress(OSError), self.path.open("a", encoding="utf-8") as late:
                    late.write(line + "\n")

    def start(self) -> None:
        """Take a first sample now, then one every ``interval`` on a daemon thread."""
        if self._thread is not None or self._stopped:
            return
        self._open()
        if self._given_sources is not None:
            self._sources = list(self._given_sources)
        else:
            setup = SourceSetup(
                targets=self.targets,
                configuration=self.configuration,
                state=state_dir(self.configuration),
                started=time.time(),
                resolve=self._resolve,
                run=current_run(),
                extra={**self.extra, "run_dir": self.directory},
            )
            self._sources = build_sources(setup)
        self._sample()
        self._thread = threading.Thread(target=self._run, name="chaosmem-timeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval
        try:
            while True:
                asked = self._wake.wait(max(0.0, next_at - time.monotonic()))
                if self._stopping.is_set():
                    break
                if asked:  # a mark asked for a sample now (see mark())
                    self._wake.clear()
                    with self._lock:
                        waiting, self._asked = self._asked, []
                    self._sample()
                    for done in waiting:
                        done.set()
                    continue
                self._sample()
                next_at += self.interval
                # NB: after a long stall (a suspended VM), skip the missed ticks, don't burst.
                if next_at < time.monotonic():
                    next_at = time.monotonic() + self.interval
            # The sources' teardown and the last sample run here, on this thread: a source that
            # hangs or raises then holds up only this thread, and stop() waits a bounded time.
            # NB: a source with work in flight (evidence captures) ends it in close(), so the
            # last sample carries its results and nothing outlives the run.
            for source in self._sources:
                close = getattr(source, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception as exc:
                        logger.warning("chaosmem timeline: closing %r failed: %s", source.key, exc)
            self._sample()
            with self._lock:
                waiting, self._asked = self._asked, []
            for done in waiting:
                done.set()
        finally:
            self._finished.set()

    def _sample(self) -> None:
        cpu = time.thread_time()
        record: dict[str, Any] = {"t": time.time(), "kind": "sample"}
        for source in self._sources:
            try:
                value = source.sample()
            except Exception as exc:
                value = {"error": f"{type(exc).__name__}: {exc}"}
            if value is not None:
                record[source.key] = value
        self._append(record)
        self.samples += 1
        self.cpu_seconds += time.thread_time() - cpu

    def mark(self, event: str, **fields: Any) -> None:
        """Note a moment (``activity-start``, ``activity-end``, ``oom-kill`` …) as of now."""
        if not isinstance(event, str) or not event:
            raise InvalidArgument("event", event, "a non-empty string")
        with self._lock:
            self._open()
        self._append({**fields, "t": time.time(), "kind": "mark", "event": event})
        if event in SAMPLED_EVENTS and self._thread is not None and not self._stopping.is_set():
            # NB: taken on the sampling thread, and waited for a bounded time only: a source
            # that hangs must not hold up the activity (or the restore) that marked.
            done = threading.Event()
            with self._lock:
                self._asked.append(done)
            self._wake.set()
            done.wait(MARK_SAMPLE_WAIT)

    def stop(self, *, timeout: float = STOP_TIMEOUT) -> list[dict[str, Any]]:
        """Stop sampling (after one last sample) and return every record, oldest first.

        Waits at most ``timeout`` seconds (or a source's own ``close_timeout``, when longer) for
        the sampling thread's last sample and its sources' teardown; a source that hangs past it
        is left behind on its daemon thread (and said so in the stats record), it does not hold
        up the caller. Safe to call again.
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            # NB: a source with longer work in flight says how long it may take to close.
            timeout = max(
                [timeout, *(float(getattr(s, "close_timeout", 0)) for s in self._sources)]
            )
            if not self._finished.wait(timeout):
                logger.warning(
                    "chaosmem timeline: a source did not finish within %gs; its last sample "
                    "is missing",
                    timeout,
                )
                self.stalled = True
            self._append(
                {
                    "t": time.time(),
                    "kind": "stats",
                    "samples": self.samples,
                    "cpu_seconds": round(self.cpu_seconds, 6),
                    "interval": self.interval,
                    **({"stalled": True} if self.stalled else {}),
                }
            )
        with self._lock:
            self._stopped = True
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
            return sorted(self._records, key=lambda r: float(r["t"]))


def read_timeline(path: Path) -> list[dict[str, Any]]:
    """The records of a ``timeline.jsonl``; lines torn by a crash are skipped."""
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("t"), int | float):
            records.append(record)
    return sorted(records, key=lambda r: float(r["t"]))
