"""Where the memory controller is mounted, and which memory cgroup a process is in.

Hosts come in three shapes: cgroup v1 (a ``memory`` hierarchy), cgroup v2 (one unified
hierarchy with the ``memory`` controller), and hybrid (v1 memory plus a unified hierarchy that
holds no controller — this project's own CI machines). The memory controller lives in exactly one
hierarchy, so we read ``/proc/self/mountinfo`` and pick the v1 memory mount when there is one,
else the v2 mount.

``$CHAOSMEM_MOUNTINFO`` names another mount table to read. It exists for containers that bind a
host's cgroupfs somewhere unusual, and it is how the tests point the same code paths at a cgroup
v2 tree on a host whose memory controller is on v1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chaosmem.errors import ChaosmemError

__all__ = [
    "CgroupMount",
    "find_mount",
    "hierarchy_path",
    "memory_cgroup_of",
    "memory_cgroup_paths",
    "memory_mounts",
    "parse_mountinfo",
    "read_mountinfo",
]

MOUNTINFO_ENV = "CHAOSMEM_MOUNTINFO"


@dataclass(frozen=True)
class CgroupMount:
    """A mounted cgroup hierarchy that carries the memory controller."""

    mountpoint: Path
    root: str  # the cgroup path the mount shows at its mountpoint (not "/" inside some containers)
    version: int

    def to_fs(self, cgroup_path: str) -> Path | None:
        """The directory of ``cgroup_path`` (as /proc/PID/cgroup spells it), if this mount shows it."""
        root = self.root.rstrip("/")
        if cgroup_path != root and not cgroup_path.startswith(root + "/"):
            return None
        relative = cgroup_path[len(root) :].lstrip("/")
        return self.mountpoint / relative if relative else self.mountpoint


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.encode().decode("unicode_escape") if "\\" in field else field


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """Cgroup mounts that carry memory: v1 mounts with the ``memory`` option, and v2 mounts.

    Whether a v2 mount really has the memory controller is decided by :func:`memory_mounts`,
    which reads its ``cgroup.controllers``; malformed lines are ignored.
    """
    mounts: list[CgroupMount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        fstype, superopts = tail[0], tail[2].split(",")
        root, mountpoint = _unescape(fields[3]), Path(_unescape(fields[4]))
        if fstype == "cgroup" and "memory" in superopts:
            mounts.append(CgroupMount(mountpoint, root, 1))
        elif fstype == "cgroup2":
            mounts.append(CgroupMount(mountpoint, root, 2))
    return mounts


def read_mountinfo() -> str:
    """The mount table chaosmem reads (``$CHAOSMEM_MOUNTINFO`` or ``/proc/self/mountinfo``)."""
    source = os.environ.get(MOUNTINFO_ENV) or "/proc/self/mountinfo"
    try:
        return Path(source).read_text()
    except OSError as exc:
        raise ChaosmemError(f"cannot read the mount table {source}: {exc.strerror}") from None


def _v2_has_memory(mount: CgroupMount) -> bool:
    try:
        return "memory" in (mount.mountpoint / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def memory_mounts() -> list[CgroupMount]:
    """The hierarchies to use for memory, preferred first: v1 memory, then v2 with memory."""
    mounts = parse_mountinfo(read_mountinfo())
    v1 = [m for m in mounts if m.version == 1]
    v2 = [m for m in mounts if m.version == 2 and _v2_has_memory(m)]
    return v1 + v2


def find_mount(path: Path) -> CgroupMount | None:
    """The memory hierarchy whose mountpoint holds ``path`` (the deepest one wins)."""
    best: CgroupMount | None = None
    for mount in memory_mounts():
        inside = path == mount.mountpoint or mount.mountpoint in path.parents
        if inside and (best is None or len(mount.mountpoint.parts) > len(best.mountpoint.parts)):
            best = mount
    return best


def memory_cgroup_paths(pid: int | str = "self") -> dict[int, str]:
    """The cgroup paths of ``pid`` relative to each hierarchy's root, by version (1: the v1
    memory hierarchy, 2: the unified one), as ``/proc/PID/cgroup`` spells them.

    Raises :class:`ProcessLookupError` when the process does not exist.
    """
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    paths: dict[int, str] = {}
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, cgpath = rest.partition(":")
        if "memory" in controllers.split(","):
            paths[1] = cgpath
        elif hierarchy == "0" and controllers == "":
            paths[2] = cgpath
    return paths


def hierarchy_path(path: Path, mount: CgroupMount) -> str:
    """The cgroup path of directory ``path`` (under ``mount``) relative to the hierarchy's root:
    the same string ``/proc/PID/cgroup`` uses, whichever of several mounts ``path`` is under."""
    relative = path.relative_to(mount.mountpoint).as_posix()
    root = mount.root.rstrip("/")
    return f"{root}/{relative}" if relative != "." else (root or "/")


def memory_cgroup_of(pid: int | str = "self") -> Path:
    """The directory of the memory cgroup that ``pid`` is in.

    Reads ``/proc/PID/cgroup``: the v1 line whose controller list holds ``memory``, else the v2
    line ``0::PATH``; raises :class:`ProcessLookupError` when the process does not exist.
    """
    paths = memory_cgroup_paths(pid)
    for mount in memory_mounts():
        member = paths.get(mount.version)
        if member is not None and (found := mount.to_fs(member)) is not None:
            return found
    raise ChaosmemError(
        f"process {pid} is in no memory cgroup this host mounts (is the memory controller enabled?)"
    )
