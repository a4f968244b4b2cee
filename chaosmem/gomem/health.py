"""The source article's diagnosis as rules: each reads named MemStats (and cgroup) fields, has
fixed thresholds, and costs the score a fixed penalty when it fires.

Input: ``samples``, MemStats snapshots (see :mod:`chaosmem.gomem.memstats`) each with a unix time
``t``, oldest first; optionally ``cgroup``, the latest ``{"usage", "limit", "working_set",
"anon", "file"}`` of the service's memory cgroup (bytes; ``limit`` None when unlimited).

Score: 100 minus the penalties of the rules that fired, floored at 0. Pattern: the fired rule
with the largest penalty ("healthy" when none). The rules (MiB = 2**20 bytes):

============================  ============================================  ===========  =======
rule / pattern                fires when                                    fields       penalty
============================  ============================================  ===========  =======
``heap-leak``                 the live heap grows >= 25 % and >= 8 MiB      HeapAlloc,   40
                              across >= 2 GCs (HeapObjects is no test: it   NextGC,
                              counts unswept garbage). Live heap: the       NumGC
                              minimum HeapAlloc of the first and last
                              third of the samples when each saw a GC,
                              else NextGC (set from the
                              live heap by each GC). Objects that survive
                              GC: the never-evicted cache of the article.
``goroutine-leak``            Goroutines grow >= 50 % and >= 100 and        Goroutines,  25
                              StackInuse grows with them (article 2.4:      StackInuse
                              leaked goroutines keep their stacks)
``gc-pause-growth``           mean pause per GC in the second half of the   PauseTotalNs 15
                              samples >= 2x the first half and >= 5 ms      NumGC,
                              (>= 3 GCs in each half: a CPU-starved host
                              stretches single pauses to milliseconds),
                              or GCCPUFraction >= 0.25 (GC thrash, e.g.     GCCPUFraction
                              a GOMEMLIMIT death spiral)
``idle-heap-retained``        HeapIdle − HeapReleased >= 64 MiB and >= 50 % HeapIdle,     15
                              of HeapSys (article 2.2: freed heap the OS    HeapReleased,
                              still counts; madvdontneed / FreeOSMemory)    HeapSys
``off-heap``                  cgroup anon memory exceeds Go's resident      anon, Sys,   20
                              estimate (Sys − HeapReleased) by >= 64 MiB    HeapReleased
                              and >= 25 % of anon: cgo, mmap or another
                              process. Page cache (``file``) is set apart:
                              it is reclaimable and not Go's.
``near-limit``                working set (usage − inactive_file, what the  working_set, 20
                              kubelet evicts on) >= 90 % of the limit       limit
``gomemlimit-above-limit``    GOMEMLIMIT >= the cgroup limit: the GC only   GOMEMLIMIT,  25
                              reacts after the kernel has killed            limit
``no-gomemlimit``             a cgroup limit is set and GOMEMLIMIT is not:  GOMEMLIMIT,  10
                              the GC paces by GOGC alone, blind to the      limit
                              limit
============================  ============================================  ===========  =======
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RULES", "Finding", "Health", "judge"]

MiB = 1 << 20
#: GOMEMLIMIT when unset (math.MaxInt64).
UNSET_LIMIT = float(2**63 - 1)

RULES: dict[str, int] = {
    "heap-leak": 40,
    "goroutine-leak": 25,
    "gomemlimit-above-limit": 25,
    "off-heap": 20,
    "near-limit": 20,
    "gc-pause-growth": 15,
    "idle-heap-retained": 15,
    "no-gomemlimit": 10,
}


@dataclass(frozen=True)
class Finding:
    rule: str
    penalty: int
    message: str
    evidence: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "penalty": self.penalty,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Health:
    score: int
    pattern: str
    findings: list[Finding]
    samples: int
    latest: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "pattern": self.pattern,
            "summary": self.summary(),
            "findings": [f.as_dict() for f in self.findings],
            "samples": self.samples,
            "latest": self.latest,
        }

    def summary(self) -> str:
        if not self.findings:
            return f"healthy (score {self.score}/100 over {self.samples} samples)"
        words = "; ".join(f.message for f in self.findings)
        return f"{self.pattern} (score {self.score}/100): {words}"


def _mib(x: float) -> str:
    return f"{x / MiB:.1f}Mi"


def _live_growth(samples: Sequence[Mapping[str, float]]) -> tuple[float, float]:
    """(live heap early, live heap late).

    After a GC, HeapAlloc is about the live heap, so with a GC in both the first and the last
    third of the samples the minimum HeapAlloc of each third is the live heap then. Otherwise
    NextGC stands in: the runtime sets it from the live heap at the end of each GC.
    """
    usable = [s for s in samples if "HeapAlloc" in s and "NumGC" in s]
    if len(usable) >= 3:
        third = max(1, len(usable) // 3)
        head, tail = usable[: third + 1], usable[-third - 1 :]
        if head[-1]["NumGC"] > head[0]["NumGC"] and tail[-1]["NumGC"] > tail[0]["NumGC"]:
            return min(s["HeapAlloc"] for s in head[1:]), min(s["HeapAlloc"] for s in tail[1:])
    return samples[0]["NextGC"], samples[-1]["NextGC"]


def _heap_leak(samples: Sequence[Mapping[str, float]]) -> Finding | None:
    gcs = samples[-1].get("NumGC", 0) - samples[0].get("NumGC", 0)
    if len(samples) < 3 or gcs < 2:
        return None
    first, last = _live_growth(samples)
    grew = last - first
    if grew < 8 * MiB or grew < 0.25 * first:
        return None
    # NB: HeapObjects is no condition: it counts unswept garbage too (a sample before a GC holds
    # thousands more than one after), and a leak of a few large buffers adds few objects.
    span = samples[-1]["t"] - samples[0]["t"]
    rate = grew / span if span > 0 else 0.0
    return Finding(
        "heap-leak",
        RULES["heap-leak"],
        f"live heap grew {_mib(first)} -> {_mib(last)} across {gcs:.0f} GCs "
        f"(~{_mib(rate)}/s): objects survive GC, as a never-evicted cache does",
        {"live_first": first, "live_last": last, "gcs": gcs, "bytes_per_second": rate},
    )


def _goroutine_leak(samples: Sequence[Mapping[str, float]]) -> Finding | None:
    first, last = samples[0], samples[-1]
    if "Goroutines" not in first or "Goroutines" not in last:
        return None
    g0, g1 = first["Goroutines"], last["Goroutines"]
    if g1 - g0 < 100 or g1 < 1.5 * g0 or last["StackInuse"] <= first["StackInuse"]:
        return None
    return Finding(
        "goroutine-leak",
        RULES["goroutine-leak"],
        f"goroutines {g0:.0f} -> {g1:.0f} with StackInuse {_mib(first['StackInuse'])} -> "
        f"{_mib(last['StackInuse'])}: goroutines that never end keep their stacks",
        {"goroutines_first": g0, "goroutines_last": g1, "stack_inuse_last": last["StackInuse"]},
    )


def _pause_growth(samples: Sequence[Mapping[str, float]]) -> Finding | None:
    latest = samples[-1]
    cpu = latest.get("GCCPUFraction")
    if cpu is not None and cpu >= 0.25:
        return Finding(
            "gc-pause-growth",
            RULES["gc-pause-growth"],
            f"GC takes {cpu:.0%} of the CPU: the collector is thrashing (a heap pressed against "
            "GOMEMLIMIT or a tiny GOGC)",
            {"gc_cpu_fraction": cpu},
        )
    usable = [s for s in samples if "NumGC" in s and "PauseTotalNs" in s]
    if len(usable) < 3:
        return None
    mid = usable[len(usable) // 2]

    def mean(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
        gcs = b["NumGC"] - a["NumGC"]
        return (b["PauseTotalNs"] - a["PauseTotalNs"]) / gcs if gcs >= 1 else None

    if mid["NumGC"] - usable[0]["NumGC"] < 3 or usable[-1]["NumGC"] - mid["NumGC"] < 3:
        return None
    before, after = mean(usable[0], mid), mean(mid, usable[-1])
    if before is None or after is None or after < 5e6 or after < 2 * before:
        return None
    return Finding(
        "gc-pause-growth",
        RULES["gc-pause-growth"],
        f"mean GC pause rose {before / 1e6:.2f} ms -> {after / 1e6:.2f} ms",
        {"pause_ns_before": before, "pause_ns_after": after},
    )


def _idle_retained(latest: Mapping[str, float]) -> Finding | None:
    retained = max(0.0, latest["HeapIdle"] - latest["HeapReleased"])
    if retained < 64 * MiB or latest["HeapSys"] <= 0 or retained < 0.5 * latest["HeapSys"]:
        return None
    return Finding(
        "idle-heap-retained",
        RULES["idle-heap-retained"],
        f"{_mib(retained)} of idle heap not returned to the OS "
        f"({retained / latest['HeapSys']:.0%} of HeapSys): the cgroup still counts it",
        {"retained": retained, "heap_sys": latest["HeapSys"]},
    )


def _cgroup_rules(latest: Mapping[str, float], cgroup: Mapping[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    limit = cgroup.get("limit")
    anon = cgroup.get("anon")
    go_resident = latest["Sys"] - latest["HeapReleased"]
    if isinstance(anon, int | float) and anon - go_resident >= max(64 * MiB, 0.25 * anon):
        found.append(
            Finding(
                "off-heap",
                RULES["off-heap"],
                f"the cgroup's anonymous memory {_mib(anon)} exceeds Go's resident estimate "
                f"{_mib(go_resident)} by {_mib(anon - go_resident)}: memory outside the Go heap "
                f"(cgo, mmap, another process); page cache {_mib(cgroup.get('file') or 0)} set apart",
                {"anon": float(anon), "go_resident": go_resident},
            )
        )
    working = cgroup.get("working_set")
    if isinstance(limit, int | float) and limit > 0:
        if isinstance(working, int | float) and working >= 0.9 * limit:
            found.append(
                Finding(
                    "near-limit",
                    RULES["near-limit"],
                    f"working set {_mib(working)} is {working / limit:.0%} of the limit "
                    f"{_mib(limit)} (what the kubelet and the OOM killer look at)",
                    {"working_set": float(working), "limit": float(limit)},
                )
            )
        gomemlimit = latest.get("GOMEMLIMIT")
        if gomemlimit is not None and gomemlimit >= UNSET_LIMIT:
            found.append(
                Finding(
                    "no-gomemlimit",
                    RULES["no-gomemlimit"],
                    f"GOMEMLIMIT is unset under a {_mib(limit)} limit: the GC paces by GOGC alone "
                    "(set it to ~90% of the limit)",
                    {"limit": float(limit)},
                )
            )
        elif gomemlimit is not None and gomemlimit >= limit:
            found.append(
                Finding(
                    "gomemlimit-above-limit",
                    RULES["gomemlimit-above-limit"],
                    f"GOMEMLIMIT {_mib(gomemlimit)} is at or above the cgroup limit {_mib(limit)}: "
                    "the kernel kills before the GC tries harder",
                    {"gomemlimit": gomemlimit, "limit": float(limit)},
                )
            )
    return found


def judge(
    samples: Sequence[Mapping[str, float]], cgroup: Mapping[str, Any] | None = None
) -> Health:
    """Score and classify a MemStats series (one sample is enough for the level rules; the trend
    rules need three or more)."""
    if not samples:
        raise ValueError("no MemStats samples to judge")
    latest = samples[-1]
    checks = [
        _heap_leak(samples),
        _goroutine_leak(samples),
        _pause_growth(samples),
        _idle_retained(latest),
    ]
    findings = [f for f in checks if f is not None]
    if cgroup:
        findings.extend(_cgroup_rules(latest, cgroup))
    findings.sort(key=lambda f: -f.penalty)
    score = max(0, 100 - sum(f.penalty for f in findings))
    pattern = findings[0].rule if findings else "healthy"
    return Health(score, pattern, findings, len(samples), dict(latest))
