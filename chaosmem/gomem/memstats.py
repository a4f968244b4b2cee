"""One MemStats snapshot from a Go service, whichever way it exposes it.

``/debug/vars`` (expvar) gives ``runtime.MemStats`` verbatim under ``memstats``; a Prometheus
endpoint gives the same fields as ``go_memstats_*`` (client_golang's Go collector), parsed with
``prometheus_client``'s own parser. Both become one flat dict keyed by MemStats' field names, so
every rule downstream reads one shape:

``HeapInuse HeapIdle HeapReleased HeapSys HeapAlloc HeapObjects Sys NextGC StackInuse
Alloc TotalAlloc Mallocs Frees NumGC PauseTotalNs GCCPUFraction Goroutines GOMEMLIMIT GOGC``

(``Goroutines``, ``GOMEMLIMIT`` and ``GOGC`` when the service publishes them: expvar
``goroutines`` and ``runtime.{gomemlimit,gogc}``, or ``go_goroutines``, ``go_gc_gomemlimit_bytes``,
``go_gc_gogc_percent``). The body is bounded (4 MiB) and every number must be finite.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from chaosmem.errors import ChaosmemError
from chaosmem.validate import check_url

__all__ = [
    "FIELDS",
    "GoMemError",
    "fetch_memstats",
    "parse_expvar",
    "parse_prometheus",
    "retained_ratio",
]

MAX_BODY = 4 << 20
#: MemStats fields every snapshot carries (the rest are optional).
FIELDS = (
    "HeapInuse",
    "HeapIdle",
    "HeapReleased",
    "HeapSys",
    "HeapAlloc",
    "Sys",
    "NextGC",
    "StackInuse",
)
_EXPVAR_FIELDS = (
    *FIELDS,
    "HeapObjects",
    "Alloc",
    "TotalAlloc",
    "Mallocs",
    "Frees",
    "NumGC",
    "PauseTotalNs",
    "GCCPUFraction",
)
_PROM = {
    "go_memstats_heap_inuse_bytes": "HeapInuse",
    "go_memstats_heap_idle_bytes": "HeapIdle",
    "go_memstats_heap_released_bytes": "HeapReleased",
    "go_memstats_heap_sys_bytes": "HeapSys",
    "go_memstats_heap_alloc_bytes": "HeapAlloc",
    "go_memstats_heap_objects": "HeapObjects",
    "go_memstats_sys_bytes": "Sys",
    "go_memstats_next_gc_bytes": "NextGC",
    "go_memstats_stack_inuse_bytes": "StackInuse",
    "go_memstats_alloc_bytes": "Alloc",
    "go_memstats_alloc_bytes_total": "TotalAlloc",
    "go_memstats_mallocs_total": "Mallocs",
    "go_memstats_frees_total": "Frees",
    "go_memstats_gc_cpu_fraction": "GCCPUFraction",
    "go_goroutines": "Goroutines",
    "go_gc_gomemlimit_bytes": "GOMEMLIMIT",
    "go_gc_gogc_percent": "GOGC",
}


class GoMemError(ChaosmemError):
    """The service's memory stats could not be read; the message says from where and why."""


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GoMemError(f"{where}: expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise GoMemError(f"{where}: {number} is not a finite number")
    return number


def parse_expvar(text: str, *, source: str = "expvar") -> dict[str, float]:
    """The MemStats of an expvar ``/debug/vars`` body."""
    if len(text) > MAX_BODY:
        raise GoMemError(f"{source}: body larger than {MAX_BODY} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise GoMemError(f"{source}: not JSON (is it an expvar /debug/vars endpoint?)") from None
    if not isinstance(data, dict) or not isinstance(data.get("memstats"), dict):
        raise GoMemError(f"{source}: no 'memstats' object; the service must import expvar")
    mem = data["memstats"]
    out: dict[str, float] = {}
    for name in _EXPVAR_FIELDS:
        if name in mem:
            out[name] = _finite(mem[name], f"{source}: memstats.{name}")
    missing = [name for name in FIELDS if name not in out]
    if missing:
        raise GoMemError(f"{source}: memstats lacks {', '.join(missing)}")
    goroutines = data.get("goroutines")
    if goroutines is not None:
        out["Goroutines"] = _finite(goroutines, f"{source}: goroutines")
    runtime = data.get("runtime")
    if isinstance(runtime, dict):
        for key, name in (("gomemlimit", "GOMEMLIMIT"), ("gogc", "GOGC")):
            if runtime.get(key) is not None:
                out[name] = _finite(runtime[key], f"{source}: runtime.{key}")
    return out


def parse_prometheus(text: str, *, source: str = "metrics") -> dict[str, float]:
    """The MemStats of a Prometheus text exposition (one process's Go collector)."""
    if len(text) > MAX_BODY:
        raise GoMemError(f"{source}: body larger than {MAX_BODY} bytes")
    out: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as exc:
        raise GoMemError(f"{source}: not Prometheus text format ({exc})") from None
    for family in families:
        for sample in family.samples:
            if sample.labels and sample.name != "go_gc_duration_seconds":
                continue
            if sample.name in _PROM:
                out[_PROM[sample.name]] = _finite(sample.value, f"{source}: {sample.name}")
            elif sample.name == "go_gc_duration_seconds_count":
                out["NumGC"] = _finite(sample.value, f"{source}: {sample.name}")
            elif sample.name == "go_gc_duration_seconds_sum":
                out["PauseTotalNs"] = _finite(sample.value, f"{source}: {sample.name}") * 1e9
    missing = [name for name in FIELDS if name not in out]
    if missing:
        raise GoMemError(
            f"{source}: no go_memstats_* for {', '.join(missing)}; is it a Go service's /metrics "
            "with the Go collector?"
        )
    return out


def fetch_memstats(url: object, *, name: str = "url", timeout: float = 5.0) -> dict[str, float]:
    """GET ``url`` (loopback only) and parse it as expvar JSON or Prometheus text.

    The body decides, not the path: JSON is expvar, anything else is Prometheus text.
    """
    text_url = check_url(url, name=name)
    request = urllib.request.Request(text_url, headers={"Accept": "application/json, text/plain"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise GoMemError(f"{text_url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GoMemError(f"{text_url}: unreachable ({reason})") from None
    text = body.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        return parse_expvar(text, source=text_url)
    return parse_prometheus(text, source=text_url)


def retained_ratio(stats: dict[str, float]) -> float:
    """(HeapIdle − HeapReleased) / HeapSys: heap Go holds from the OS but does not use."""
    if stats["HeapSys"] <= 0:
        raise GoMemError("HeapSys is 0: no heap to speak of")
    return max(0.0, stats["HeapIdle"] - stats["HeapReleased"]) / stats["HeapSys"]
