"""The ``go`` timeline source: the Go service's MemStats every tick, its gctrace lines, and the
evidence captured before an OOM kill.

Enabled by the control argument ``go``::

    "controls": [{"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control",
                  "arguments": {"go": {"url": "http://127.0.0.1:8080/debug/vars"}}}}]

``url`` (required) is ``/debug/vars`` or ``/metrics`` on loopback; ``target`` (default: the run's
only target) is the service's memory target; ``evidence_at`` (default 0.9, ``false`` to disable)
is the working-set fraction of the limit at which heap and goroutine profiles are fetched from
``pprof`` (default: ``/debug/pprof`` on the url's host) — once when it is crossed, and again at
each OOM kill of the target. For a ``service`` target started with ``GODEBUG=gctrace=1`` its log
is followed from the run's start and each tick carries the GCs since the last one.

Each sample is ``{"HeapInuse", "HeapIdle", "HeapReleased", "HeapSys", "HeapAlloc", "Sys",
"NextGC", "StackInuse", "Goroutines", "NumGC", "gc": {…}, "evidence": […]}`` (``gc`` and
``evidence`` only when there is something new).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaosmem.errors import InvalidArgument
from chaosmem.gomem.evidence import capture
from chaosmem.gomem.gctrace import parse_gctrace
from chaosmem.gomem.memstats import FIELDS, GoMemError, fetch_memstats
from chaosmem.targets import MemoryTarget, resolve_target, target_spec
from chaosmem.targets.workingset import memory_breakdown
from chaosmem.timeline.sources import SourceSetup, register_source
from chaosmem.units import parse_fraction
from chaosmem.validate import check_mapping, check_url

__all__ = ["GoSource", "GoWatch", "parse_go_argument"]

#: What each sample keeps of a snapshot: the fields every snapshot carries, and two counters.
KEYS = (*FIELDS, "Goroutines", "NumGC")
MAX_LOG_READ = 1 << 20


@dataclass(frozen=True)
class GoWatch:
    url: str
    pprof: str
    target: dict[str, Any] | None
    evidence_at: float | None


def parse_go_argument(value: object, targets: list[dict[str, Any]]) -> GoWatch | None:
    """The control's ``go`` argument, validated (None when absent)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"url": value}
    spec = check_mapping(value, name="go")
    unknown = set(spec) - {"url", "target", "evidence_at", "pprof"}
    if unknown:
        raise InvalidArgument("go", dict(spec), "keys among url, target, evidence_at, pprof")
    url = check_url(spec.get("url"), name="go.url")
    parts = urlsplit(url)
    pprof = check_url(
        spec.get("pprof", f"{parts.scheme}://{parts.netloc}/debug/pprof"), name="go.pprof"
    ).rstrip("/")
    target = spec.get("target")
    if target is not None:
        target = target_spec(target, None, name="go.target")
    elif len(targets) == 1:
        target = dict(targets[0])
    evidence = spec.get("evidence_at", 0.9)
    at = None if evidence is False else parse_fraction(evidence, name="go.evidence_at")
    return GoWatch(url=url, pprof=pprof, target=target, evidence_at=at)


class GoSource:
    key = "go"
    #: How long the recorder waits for close() and the last sample (captures in flight).
    close_timeout = 95.0

    def __init__(self, setup: SourceSetup, watch: GoWatch) -> None:
        self.watch = watch
        self.configuration = setup.configuration
        self.evidence_dir = Path(setup.extra.get("run_dir") or setup.state) / "evidence"
        self.target: MemoryTarget | None = None
        self.crossed = False
        self.kills: int | None = None
        self.done: list[dict[str, Any]] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.log: Path | None = None
        self.offset = 0
        if watch.target and watch.target.get("type") == "service":
            name = str(watch.target.get("name", ""))
            log = setup.state / "services" / f"{name}.log"
            if "/" not in name and name not in {"", ".", ".."}:
                self.log = log
                # NB: the log is appended to across runs: this run's lines start here.
                self.offset = log.stat().st_size if log.exists() else 0

    def _gc_lines(self) -> dict[str, Any] | None:
        if self.log is None:
            return None
        try:
            with self.log.open("rb") as f:
                f.seek(self.offset)
                data = f.read(MAX_LOG_READ)
        except OSError:
            return None
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next tick
        self.offset += end
        gcs = parse_gctrace(data[:end].decode("utf-8", errors="replace").splitlines())
        if not gcs:
            return None
        last = gcs[-1]
        return {
            "count": len(gcs),
            "last": last.number,
            "pause_ms_max": max(g.pause_ms for g in gcs),
            "pause_ms_sum": round(sum(g.pause_ms for g in gcs), 6),
            "heap_live": last.heap_live,
            "heap_goal": last.heap_goal,
            "cpu_percent": last.cpu_percent,
        }

    def _capture(self, reason: str) -> None:
        def run() -> None:
            record = capture(self.watch.pprof, self.evidence_dir, reason=reason)
            with self.lock:
                self.done.append(record)

        thread = threading.Thread(target=run, name=f"chaosmem-evidence-{reason}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _watch_target(self) -> dict[str, Any] | None:
        if self.watch.target is None or self.watch.evidence_at is None:
            return None
        try:
            if self.target is None:
                self.target = resolve_target(self.watch.target, self.configuration)
            breakdown = memory_breakdown(self.target)
            limit = self.target.memory_limit()
            kills = self.target.oom_kill_count()
        except Exception:
            self.target = None
            return None
        working = breakdown["working_set"] if breakdown else None
        if self.kills is not None and kills > self.kills:
            self._capture(f"oom-kill-{kills}")
        self.kills = kills
        if limit and working is not None:
            ratio = working / limit
            if ratio >= self.watch.evidence_at and not self.crossed:
                self.crossed = True
                self._capture(f"working-set-{round(self.watch.evidence_at * 100)}pct")
            elif ratio < self.watch.evidence_at * 0.8:
                self.crossed = False  # re-arm after the pressure has clearly gone
            return {"working_set_ratio": round(ratio, 4)}
        return None

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            stats = fetch_memstats(self.watch.url, name="go.url", timeout=2.0)
            out.update({k: stats[k] for k in KEYS if k in stats})
        except GoMemError as exc:
            out["error"] = str(exc)
        gc = self._gc_lines()
        if gc:
            out["gc"] = gc
        extra = self._watch_target()
        if extra:
            out.update(extra)
        with self.lock:
            if self.done:
                out["evidence"], self.done = self.done, []
        return out

    def close(self) -> None:
        """Wait for captures in flight (each bounded by its timeouts), so the recorder's last
        sample carries them and no capture outlives the run."""
        for thread in self.threads:
            thread.join(timeout=90)


@register_source("go")
def _go(setup: SourceSetup) -> GoSource | None:
    watch = parse_go_argument(setup.extra.get("go"), setup.targets)
    return GoSource(setup, watch) if watch is not None else None
