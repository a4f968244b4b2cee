"""``chaosmem doctor``: can chaosmem create memory cgroups here, where, and what to change if not.

It answers the questions a failing first run raises on a new host: which cgroup version holds
the memory controller, which cgroup chaosmem itself is in, where it will create its cgroups and
why there (:mod:`chaosmem.targets.placement`), whether it really may (it creates one empty probe
cgroup there and removes it at once), and how the kernel picks OOM victims there
(``memory.oom.group``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.mounts import memory_cgroup_of, memory_mounts, parse_mountinfo, read_mountinfo
from chaosmem.targets.placement import ROOT_KEY, placement_for, release

__all__ = ["diagnose", "register"]

_OOM_GROUP = {
    "0": "the kernel OOM-kills one process at a time (the highest OOM score, usually the "
    "largest); the others keep running",
    "1": "the kernel OOM-kills every process of the cgroup together (as Kubernetes 1.28+ "
    "sets for containers on cgroup v2)",
}


def _probe(parent: Cgroup) -> tuple[str | None, str]:
    """Create and remove one empty child: (what went wrong or None, its ``memory.oom.group``)."""
    name = f"chaosmem-doctor-{os.getpid()}"
    try:
        child = parent.child(name)
    except ChaosmemError as exc:
        return str(exc), ""
    try:
        Cgroup.at(child.path)  # the memory controller really reaches the child
        return None, _read(child.path / "memory.oom.group")
    except ChaosmemError as exc:
        return str(exc), ""
    finally:
        child.remove(grace=0)


def diagnose(*, cgroup_root: str | None = None) -> dict[str, Any]:
    """What ``chaosmem doctor`` prints, as data (``--json``)."""
    report: dict[str, Any] = {"ok": False}
    mounts = memory_mounts()
    every = parse_mountinfo(read_mountinfo())
    if not mounts:
        report["problem"] = (
            "no mounted cgroup hierarchy carries the memory controller; mount cgroup2 on "
            "/sys/fs/cgroup (or cgroup v1's memory controller) and boot with it enabled"
        )
        return report
    version = mounts[0].version
    hybrid = version == 1 and any(m.version == 2 for m in every)
    report["cgroup_version"] = version
    report["hybrid"] = hybrid
    report["mount"] = str(mounts[0].mountpoint)
    try:
        own = memory_cgroup_of("self")
    except ChaosmemError as exc:
        report["problem"] = str(exc)
        return report
    report["own_cgroup"] = str(own)
    report["euid"] = os.geteuid()
    config = {ROOT_KEY: cgroup_root} if cgroup_root is not None else None
    try:
        parent, placement = placement_for(config)
    except ChaosmemError as exc:
        report["problem"] = str(exc)
        return report
    report["where"], report["why"] = str(parent.path), placement.reason
    try:
        failure, oom_group = _probe(parent)
    finally:
        if placement.owned:
            release(parent.path)
    if failure is not None:
        report["problem"] = f"creating a cgroup in {parent.path} failed: {failure}"
        return report
    report["ok"] = True
    if version == 2:
        oom_group = oom_group or "0"
        report["memory_oom_group"] = oom_group
        report["oom_behaviour"] = _OOM_GROUP.get(oom_group, oom_group)
    else:
        report["oom_behaviour"] = (
            "cgroup v1 has no group OOM kill: the kernel kills the process of the cgroup with the "
            "highest OOM score, usually the largest (unless oom_kill_disable is set in "
            "memory.oom_control)"
        )
    return report


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _print(report: dict[str, Any]) -> None:
    if "cgroup_version" in report:
        kind = f"cgroup v{report['cgroup_version']}" + (
            " (hybrid host: the memory controller is on v1)" if report["hybrid"] else ""
        )
        print(f"memory controller: {kind}, mounted at {report['mount']}")
    if "own_cgroup" in report:
        print(f"chaosmem runs in:   {report['own_cgroup']} (euid {report['euid']})")
    if "where" in report:
        print(f"creates cgroups in: {report['where']}")
        print(f"because:            {report['why']}")
    if report["ok"]:
        print("may it:             yes (created and removed a probe cgroup there)")
        group = report.get("memory_oom_group")
        where = f"memory.oom.group {group} in a new cgroup: " if group is not None else ""
        print(f"OOM kills:          {where}{report['oom_behaviour']}")
    else:
        print("may it:             no")
        print(f"what to change:     {report.get('problem')}")


def _doctor(args: argparse.Namespace) -> int:
    report = diagnose(cgroup_root=args.cgroup_root)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if report["ok"] else 1


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "doctor",
        help="check where chaosmem can create memory cgroups on this host",
        description="Print the cgroup version, where chaosmem will create its cgroups and why, "
        "whether it may (it creates and removes one empty probe cgroup), how the kernel "
        "OOM-kills there, and what to change when it cannot. Exits 1 when it cannot.",
    )
    parser.add_argument(
        "--cgroup-root",
        help=f"check this cgroup as configuration[{ROOT_KEY!r}] would give it",
    )
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(handler=_doctor)
