"""Chaos Toolkit probes over a Go service's runtime memory, read from its ``/debug/vars``
(expvar) or its Prometheus ``/metrics`` (loopback URLs only).

``memory_health`` samples the service for ``window`` and judges the series with the rules of
:mod:`chaosmem.gomem.health` (documented there: fields, thresholds, penalties); given the
service's ``target`` it also weighs the cgroup's usage, working set and limit against Go's view.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import InvalidArgument
from chaosmem.gomem.health import judge
from chaosmem.gomem.memstats import fetch_memstats, retained_ratio
from chaosmem.targets import resolve_target
from chaosmem.targets.workingset import memory_breakdown
from chaosmem.units import parse_duration

__all__ = ["go_memstats", "heap_retained_ratio", "memory_health"]

logger = logging.getLogger("chaostoolkit")
MAX_SAMPLES = 600


def go_memstats(
    url: str, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, float]:
    """The service's MemStats now: HeapInuse, HeapIdle, HeapReleased, HeapSys, HeapAlloc, Sys,
    NextGC, StackInuse, and NumGC, PauseTotalNs, Goroutines, GOMEMLIMIT, GOGC when published."""
    return fetch_memstats(url)


def heap_retained_ratio(
    url: str, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """(HeapIdle − HeapReleased) / HeapSys, 0..1: heap Go keeps from the OS without using it —
    memory the cgroup counts and the GC has already freed (the source article's 2.2)."""
    return retained_ratio(fetch_memstats(url))


def cgroup_view(target: Any, configuration: Configuration) -> dict[str, Any] | None:
    """The target's limit, usage, working set, anon and file memory (None without memory.stat)."""
    resolved = resolve_target(target, configuration)
    view: dict[str, Any] | None = memory_breakdown(resolved)
    if view is not None:
        view["limit"] = resolved.memory_limit()
    return view


def memory_health(
    url: str,
    target: dict[str, Any] | None = None,
    window: Any = "5s",
    interval: Any = "1s",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Sample the service every ``interval`` for ``window`` and return ``{"score": 0..100,
    "pattern": "heap-leak" | "goroutine-leak" | … | "healthy", "summary", "findings",
    "samples", "latest", "cgroup"}``.

    Trend rules (leak, goroutine leak, pause growth) need a window long enough for two GCs;
    a service that did not collect in the window is not called leaking.
    """
    seconds = parse_duration(window, name="window")
    step = parse_duration(interval, name="interval", minimum=0.05)
    count = int(seconds / step) + 1
    if count > MAX_SAMPLES:
        raise InvalidArgument("window", window, f"at most {MAX_SAMPLES} intervals long")
    cgroup = None
    if target is not None or (configuration or {}).get("chaosmem_target") is not None:
        cgroup = cgroup_view(target, configuration)
    samples: list[dict[str, float]] = []
    next_at = time.monotonic()
    for index in range(count):
        if index:
            next_at += step
            time.sleep(max(0.0, next_at - time.monotonic()))
        samples.append({"t": time.time(), **fetch_memstats(url)})
    if cgroup is not None:
        cgroup = cgroup_view(target, configuration)
    health = judge(samples, cgroup)
    logger.info("chaosmem: Go memory of %s: %s", url, health.summary())
    return {**health.as_dict(), "cgroup": cgroup}
