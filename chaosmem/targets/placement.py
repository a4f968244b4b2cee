"""Where chaosmem creates its child cgroups when nobody said where, and why there.

On cgroup v1 the answer is simple: a child of chaosmem's own memory cgroup; v1 has no rule
against a group with processes having children with limits of their own.

cgroup v2 has one (the "no internal processes" rule): a non-root cgroup that holds processes
cannot hand the memory controller down to its children. On a CI runner the job runs in such a
group (``/system.slice/<runner>.service``), so chaosmem looks upward for a place where it may
create children, and puts them in a ``chaosmem`` sub-tree there, which it owns:

1. its own cgroup, when that is the hierarchy's root (the root is exempt from the rule);
2. the nearest ancestor that holds no processes of its own and whose ``cgroup.subtree_control``
   has ``memory`` or can take it (``memory`` is in its ``cgroup.controllers``), if writable;
3. the hierarchy root, as root.

It never moves a process it did not start. When no place qualifies it says what to change: a
delegated, empty cgroup in ``chaosmem_cgroup_root``, ``systemd-run --user --scope``, or,
inside a container whose cgroup namespace root holds its processes, moving those processes into a
leaf first (which only the container's owner may decide to do). Without root, ``systemd-run --user
--scope`` puts chaosmem in the user manager's delegated tree, where the ancestor search finds a
writable slice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.mounts import find_mount, memory_cgroup_of
from chaosmem.validate import check_str

__all__ = ["ROOT_KEY", "SUBTREE", "Placement", "find_placement", "placement_for", "release"]

ROOT_KEY = "chaosmem_cgroup_root"
#: The name of the sub-tree chaosmem creates (and removes when empty) on cgroup v2.
SUBTREE = "chaosmem"

logger = logging.getLogger("chaostoolkit")


@dataclass(frozen=True)
class Placement:
    """The cgroup under which chaosmem creates its children, and why there."""

    path: Path
    version: int
    reason: str
    #: True when ``path`` is a ``chaosmem`` sub-tree chaosmem may remove once it is empty.
    owned: bool = False
    #: Why chaosmem may not create children here (None: it may).
    problem: str | None = None

    def describe(self) -> str:
        return f"{self.path} ({self.reason})"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _holds_processes(path: Path) -> bool:
    return bool(_read(path / "cgroup.procs").split())


def _can_take_memory(path: Path) -> bool:
    """``memory`` is delegated to its children already, or may be (it is in its controllers)."""
    if "memory" in _read(path / "cgroup.subtree_control").split():
        return True
    return "memory" in _read(path / "cgroup.controllers").split()


def _is_true_root(path: Path) -> bool:
    """The host's hierarchy root has no ``memory.max``; a cgroup namespace's root does."""
    return (path / "cgroup.controllers").exists() and not (path / "memory.max").exists()


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK) and os.access(path / "cgroup.subtree_control", os.W_OK)


def find_placement(own: Path | None = None) -> Placement:
    """Where chaosmem's children go with no configuration; ``problem`` says when nowhere works."""
    path = Path(os.path.normpath(own)) if own is not None else memory_cgroup_of("self")
    found = find_mount(path)
    if found is None:
        raise ChaosmemError(f"{path} is not under a mounted memory cgroup hierarchy")
    if found.version == 1:
        return Placement(path, 1, "cgroup v1: a child of chaosmem's own memory cgroup")
    # NB: on v2 our own cgroup may lack the memory controller (its parent does not delegate
    # it), so only the path and the mount are taken from it, never its memory files.
    mount = found.mountpoint
    if path == mount and _is_true_root(mount):
        return Placement(mount / SUBTREE, 2, "chaosmem runs in the cgroup v2 root", owned=True)
    if path == mount:
        return Placement(mount, 2, "no place found", problem=_namespace_problem(mount))
    # NB: our own cgroup holds at least this process, so it can never delegate memory.
    held = (
        f"its own cgroup {path} holds processes (cgroup v2 lets only a cgroup without "
        "processes delegate memory)"
    )
    for candidate in path.parents:
        if candidate == mount or mount not in candidate.parents:
            break
        if _usable(candidate):
            return Placement(
                candidate / SUBTREE, 2, f"{held}: the nearest ancestor that may", owned=True
            )
    if _is_true_root(mount):
        if os.geteuid() == 0 and _writable(mount):
            return Placement(
                mount / SUBTREE,
                2,
                f"{held} and no ancestor below the root may: the hierarchy root, as root",
                owned=True,
            )
    elif _usable(mount):
        return Placement(mount / SUBTREE, 2, f"{held}: the cgroup namespace root", owned=True)
    problem = (
        f"chaosmem's own cgroup {path} holds processes and no ancestor it may write can "
        "delegate the memory controller (cgroup v2 lets only a cgroup without processes do "
        "that). Run as root, or set chaosmem_cgroup_root to an empty cgroup delegated to you, "
        "or start chaosmem inside the systemd user manager's delegated tree: "
        "systemd-run --user --scope -p Delegate=yes <command>"
    )
    return Placement(path, 2, "no place found", problem=problem)


def _usable(path: Path) -> bool:
    return not _holds_processes(path) and _can_take_memory(path) and _writable(path)


def _namespace_problem(mount: Path) -> str:
    return (
        f"chaosmem runs in the root of its own cgroup namespace ({mount}), which holds "
        "processes, so cgroup v2 lets it create no child with a memory limit there, and chaosmem "
        "never moves processes it did not start. Move the container's processes into a leaf "
        f"first (from inside, with the cgroupfs writable: mkdir {mount}/init && for p in $(cat "
        f"{mount}/cgroup.procs); do echo $p > {mount}/init/cgroup.procs; done), or set "
        "chaosmem_cgroup_root to an empty cgroup with memory in its cgroup.controllers"
    )


def placement_for(
    configuration: Mapping[str, Any] | None, *, own: Path | None = None
) -> tuple[Cgroup, Placement]:
    """The parent cgroup for new children, created if needed, with the one log line about it.

    ``configuration["chaosmem_cgroup_root"]`` overrides the search and is used as it is; ``own``
    stands for chaosmem's own cgroup (default: the one this process is in).
    """
    root = (configuration or {}).get(ROOT_KEY)
    if root is not None:
        path = check_str(root, name=ROOT_KEY)
        try:
            group = Cgroup.at(path)
        except ChaosmemError as exc:
            raise InvalidArgument(
                ROOT_KEY, root, f"an existing memory cgroup directory ({exc})"
            ) from None
        placement = Placement(group.path, group.version, f"configuration[{ROOT_KEY!r}]")
        logger.info("chaosmem: creating cgroups under %s", placement.describe())
        return group, placement
    placement = find_placement(own)
    if placement.problem is not None:
        raise ChaosmemError(placement.problem)
    if placement.owned:
        # NB: not Cgroup.at: the hierarchy root has no memory.max of its own.
        base = Cgroup(placement.path.parent, 2, find_mount(placement.path.parent))
        group = base.child(placement.path.name)
    else:
        group = Cgroup.at(placement.path)
    logger.info("chaosmem: creating cgroups under %s", placement.describe())
    return group, placement


def release(subtree: Path) -> None:
    """Remove chaosmem's own sub-tree once it is empty; another run's children keep it.

    NB: a second run that found the sub-tree a moment before this removes it fails to create its
    child with a clear error (the directory is gone) and can simply be retried.
    """
    if subtree.name != SUBTREE:
        return
    with contextlib.suppress(OSError):
        subtree.rmdir()
