"""A Linux memory cgroup, v1 or v2, through its files: the local backend's one real object.

The two versions name the same things differently, and behave differently when a limit is set
below what the group already uses:

============  =============================  ==================================
              cgroup v1                      cgroup v2
============  =============================  ==================================
limit         ``memory.limit_in_bytes``      ``memory.max`` (``max`` = none)
usage         ``memory.usage_in_bytes``      ``memory.current``
OOM kills     ``memory.oom_control`` oom_kill ``memory.events`` oom_kill
below usage   the kernel reclaims, and when  the write succeeds; the kernel
              it cannot, the write fails     reclaims, then OOM-kills until
              with EBUSY: nothing changes    usage fits under the new limit
============  =============================  ==================================

On v1 ``memory.memsw.limit_in_bytes`` (memory+swap), when present, must stay >= the memory
limit, so a tightened limit also tightens memsw (swap is no way out of the experiment) and the
two are written in the order the kernel accepts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.ledger import Entry, register_undo
from chaosmem.lifecycle import ProcessesRemain, end_processes
from chaosmem.targets import LimitChange, LimitRefused
from chaosmem.targets.mounts import (
    CgroupMount,
    find_mount,
    hierarchy_path,
    memory_cgroup_of,
    memory_cgroup_paths,
)
from chaosmem.units import format_size

__all__ = ["UNLIMITED_V1", "Cgroup", "LimitBusy", "LimitMismatch", "ensure_not_own", "same_limit"]

#: What v1 reports for "no limit" (PAGE_COUNTER_MAX pages); anything this large means unlimited.
UNLIMITED_V1 = 9223372036854771712
_UNLIMITED_FLOOR = 1 << 62
_PAGE = 4096
_PR_SET_PDEATHSIG = 1


def same_limit(wanted: int | None, held: int | None) -> bool:
    """Whether the kernel holds the limit asked for: the same to the page (it keeps whole
    pages), or both unlimited."""
    if wanted is None or held is None:
        return wanted is None and held is None
    return abs(int(wanted) - held) < _PAGE


class LimitMismatch(LimitRefused):
    """The kernel held another limit than the one written; it was put back, nothing changed."""


class LimitBusy(LimitRefused):
    """cgroup v1 refused a limit below usage because it could not reclaim enough (EBUSY)."""


def _read_int(text: str) -> int | None:
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if value >= _UNLIMITED_FLOOR else value


def _keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


@dataclass(frozen=True)
class Cgroup:
    """One memory cgroup directory and the hierarchy version its files follow."""

    path: Path
    version: int
    mount: CgroupMount | None = field(default=None, compare=False)

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> Cgroup:
        """The cgroup at ``path``, which must be a directory under a memory cgroup mount."""
        directory = Path(os.path.normpath(os.fspath(path)))
        mount = find_mount(directory)
        if mount is None:
            raise ChaosmemError(f"{directory} is not under a mounted memory cgroup hierarchy")
        if not directory.is_dir():
            raise ChaosmemError(f"{directory}: no such cgroup (the directory does not exist)")
        group = cls(directory, mount.version, mount)
        if not (directory / group._limit_file).exists():
            raise ChaosmemError(
                f"{directory} has no {group._limit_file}: the memory controller is not enabled "
                "there (on cgroup v2, add +memory to the parent's cgroup.subtree_control)"
            )
        return group

    @classmethod
    def of_process(cls, pid: int | str = "self") -> Cgroup:
        return cls.at(memory_cgroup_of(pid))

    # -- the MemoryTarget face -------------------------------------------------------------

    @property
    def limit_kind(self) -> str:
        return "cgroup-limit"

    @property
    def spec(self) -> dict[str, Any]:
        return {"type": "cgroup", "path": str(self.path)}

    def describe(self) -> str:
        return f"cgroup v{self.version} {self.path}"

    @property
    def max_limit(self) -> int:
        """The largest limit this cgroup holds *as a limit*: from 4Ei up, both versions read
        back as unlimited (and v1 takes 2**64 as 0), so larger requests are refused."""
        return _UNLIMITED_FLOOR - _PAGE

    def check_changeable(self) -> None:
        ensure_not_own(self)

    def watch_oom_kills(
        self, on_kill: Callable[[Any], None], *, spec: Mapping[str, Any], baseline: Any = None
    ) -> Any:
        """Watch for OOM kills from ``baseline`` (a :class:`~chaosmem.targets.oombase.Baseline`:
        the run's count of this cgroup starts there), else from now."""
        from chaosmem.targets.oomwatch import OomWatcher  # NB: oomwatch imports this module

        return OomWatcher(self, on_kill=on_kill, spec=spec, baseline=baseline).start()

    # -- files -----------------------------------------------------------------------------

    @property
    def _limit_file(self) -> str:
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except FileNotFoundError:
            raise ChaosmemError(f"{self.path}: cgroup is gone (no {name})") from None

    def _write(self, name: str, value: str) -> None:
        mode = os.O_APPEND if name == "cgroup.procs" else os.O_TRUNC
        fd = os.open(self.path / name, os.O_WRONLY | mode)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    @property
    def has_memsw(self) -> bool:
        return self.version == 1 and (self.path / "memory.memsw.limit_in_bytes").exists()

    # -- what probes read ------------------------------------------------------------------

    def memory_limit(self) -> int | None:
        """Bytes, or None when the group has no limit of its own."""
        return _read_int(self._read(self._limit_file))

    def memsw_limit(self) -> int | None:
        return _read_int(self._read("memory.memsw.limit_in_bytes")) if self.has_memsw else None

    def memory_usage(self) -> int:
        value = _read_int(
            self._read("memory.usage_in_bytes" if self.version == 1 else "memory.current")
        )
        return value or 0

    def peak_usage(self) -> tuple[int, str] | None:
        """The kernel's own peak usage and the file it came from: v1 ``max_usage_in_bytes``
        (since :meth:`reset_peak`), v2 ``memory.peak`` where the kernel has it (5.19+, since the
        cgroup was created); None where the kernel keeps no peak."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            value = _read_int((self.path / name).read_text())
        except FileNotFoundError:
            if self.version == 2 and self.exists():
                return None
            raise ChaosmemError(f"{self.path}: cgroup is gone (no {name})") from None
        return None if value is None else (value, name)

    def reset_peak(self) -> bool:
        """Start the kernel's peak afresh (v1); False where it cannot be reset (v2)."""
        if self.version != 1:
            return False
        self._write("memory.max_usage_in_bytes", "0")
        return True

    def oom_kill_count(self) -> int:
        """The kernel's count of OOM kills in this group (v2: including its descendants)."""
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        return _keyed(text).get("oom_kill", 0)

    def stat(self) -> dict[str, int]:
        """``memory.stat`` as a dict (rss/anon, cache/file, ...), for reports and probes."""
        return _keyed(self._read("memory.stat"))

    def pids(self) -> list[int]:
        return [int(p) for p in self._read("cgroup.procs").split()]

    def exists(self) -> bool:
        return self.path.is_dir()

    # -- what actions change ---------------------------------------------------------------

    def limit_state(self) -> dict[str, Any]:
        """Everything :meth:`restore_limit_state` needs to put the limit back as it is now."""
        state: dict[str, Any] = {"version": self.version, "limit": self.memory_limit()}
        if self.has_memsw:
            state["memsw"] = self.memsw_limit()
        return state

    def set_memory_limit(self, limit: int | None) -> LimitChange:
        """Set the limit (None = unlimited); on v1 memsw follows it. A cgroup write takes effect
        at once, so the change is ``applied`` (or refused by raising).

        Raises :class:`LimitBusy` when v1 could not reclaim down to a limit below usage; the
        limit is then unchanged. What was written is read back: when the kernel holds anything
        else (v1 takes 2**64 as 0 and 1e20 as 7766279631452241920; values from 2**62 read as
        "unlimited"), the previous limit is put back and :class:`LimitMismatch` raised, so
        nothing is left changed and nothing is silently wrong.
        """
        before = self.limit_state()
        self._apply(limit)
        held = self.memory_limit()
        if not same_limit(limit, held):
            self.restore_limit_state(before)
            raise LimitMismatch(
                f"{self.path}: asked for a limit of {limit} bytes, the kernel holds "
                f"{held if held is not None else 'no limit'}; put back "
                f"{format_size(before.get('limit'))}"
            )
        return LimitChange("applied", "applied", f"{self.path}: limit {format_size(limit)}")

    def _apply(self, limit: int | None) -> None:
        if self.version == 2:
            self._write("memory.max", "max" if limit is None else str(limit))
        else:
            self._set_v1(limit, limit if self.has_memsw else None, touch_memsw=self.has_memsw)

    def restore_limit_state(self, state: Mapping[str, Any]) -> None:
        if self.version == 2:
            self._apply(state.get("limit"))
        else:
            self._set_v1(
                state.get("limit"),
                state.get("memsw"),
                touch_memsw=self.has_memsw and "memsw" in state,
            )

    def _set_v1(self, limit: int | None, memsw: int | None, *, touch_memsw: bool) -> None:
        value = "-1" if limit is None else str(limit)
        memsw_value = "-1" if memsw is None else str(memsw)
        current = self.memory_limit()
        raising = limit is None or (current is not None and limit > current)
        # NB: the kernel insists memory <= memsw at every moment, so memsw moves first when
        # raising and last when lowering.
        steps: list[tuple[str, str]] = [("memory.limit_in_bytes", value)]
        if touch_memsw:
            memsw_step = ("memory.memsw.limit_in_bytes", memsw_value)
            steps = [memsw_step, *steps] if raising else [*steps, memsw_step]
        for name, text in steps:
            try:
                self._write(name, text)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    wanted = "no limit" if text == "-1" else format_size(int(text))
                    raise LimitBusy(
                        f"{self.path}: cgroup v1 could not reclaim memory down to {wanted} "
                        f"(usage is {format_size(self.memory_usage())}); the limit is unchanged"
                    ) from None
                raise ChaosmemError(
                    f"{self.path}: writing {text} to {name} failed: {exc.strerror}"
                ) from None

    # -- children and processes ------------------------------------------------------------

    def child(self, name: str) -> Cgroup:
        """Create (or reuse) the child cgroup ``name``; on v2 the memory controller is delegated."""
        if self.version == 2:
            controls = self._read("cgroup.subtree_control").split()
            if "memory" not in controls:
                try:
                    self._write("cgroup.subtree_control", "+memory")
                except OSError as exc:
                    raise ChaosmemError(
                        f"{self.path}: cannot enable the memory controller for children ({exc.strerror}); "
                        "on cgroup v2 a group with processes of its own cannot delegate (set "
                        "chaosmem_cgroup_root to an empty, delegated cgroup; `chaosmem doctor` says where)"
                    ) from None
        path = self.path / name
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            raise ChaosmemError(f"cannot create cgroup {path}: {exc.strerror}") from None
        return Cgroup(path, self.version, self.mount)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        die_with_parent: bool = False,
        new_session: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this cgroup, before it runs a single instruction of its own.

        Memory is charged to the cgroup that first touches it and stays there when a process
        moves, so the child joins the group between fork and exec. ``die_with_parent`` sets
        PR_SET_PDEATHSIG (SIGKILL); NB: Linux sends it when the *thread* that forked exits.
        """
        procs_fd = os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_APPEND)
        parent = os.getpid()
        prctl: Callable[..., int] | None = (
            ctypes.CDLL(None, use_errno=True).prctl if die_with_parent else None
        )

        def enter() -> None:  # runs in the child between fork and exec: no imports, no locks
            os.write(procs_fd, b"%d\n" % os.getpid())
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != parent:
                    os._exit(1)

        try:
            return subprocess.Popen(
                list(argv),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                preexec_fn=enter,
                start_new_session=new_session,
                pass_fds=tuple(pass_fds),
            )
        except OSError as exc:
            raise ChaosmemError(
                f"cannot start {argv[0]!r} in {self.path}: {exc.strerror}"
            ) from None
        finally:
            os.close(procs_fd)

    def kill_all(self, *, grace: float = 5.0) -> list[int]:
        """End every process in the group (SIGTERM, then SIGKILL after ``grace``), by PID.

        Membership is the identity here: the group's own process list is read again each round.
        """

        def members() -> list[int]:
            if not self.exists():
                return []
            try:
                return self.pids()
            except ChaosmemError:
                return []

        try:
            return end_processes(members, grace=grace)
        except ProcessesRemain as exc:
            raise ChaosmemError(f"{self.path}: {exc}") from None

    def remove(self, *, grace: float = 5.0) -> list[int]:
        """End every process in the group and remove it; harmless when it is already gone."""
        ended = self.kill_all(grace=grace)
        for _ in range(250):
            try:
                self.path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise ChaosmemError(
                        f"cannot remove cgroup {self.path}: {exc.strerror}"
                    ) from None
                self.kill_all(grace=0)
                time.sleep(0.02)
        return ended


def _identities(directory: Path, top: Path) -> set[tuple[int, int]]:
    """(device, inode) of ``directory`` and each ancestor up to ``top``: the cgroup's identity,
    the same through every mount of its hierarchy."""
    found: set[tuple[int, int]] = set()
    for path in (directory, *directory.parents):
        with contextlib.suppress(OSError):
            info = os.stat(path)
            found.add((info.st_dev, info.st_ino))
        if path == top:
            break
    return found


def holds_self(group: Cgroup) -> Path | None:
    """This process's own memory cgroup directory when ``group`` is it or one of its ancestors.

    Compared by identity, not by path: a second mount of the hierarchy (``mount -t cgroup -o
    memory x /mnt/x``) shows the same cgroups under other paths. Two checks, either suffices:
    the hierarchy-relative path (``/proc/self/cgroup`` against the group's mount root from
    mountinfo), and the directory's device and inode against those of our own cgroup and its
    ancestors.
    """
    try:
        own = memory_cgroup_of("self")
        own_paths = memory_cgroup_paths("self")
    except (ChaosmemError, OSError):
        return None
    mount = group.mount or find_mount(group.path)
    if mount is not None and mount.version in own_paths:
        mine = own_paths[mount.version].rstrip("/") + "/"
        theirs = hierarchy_path(group.path, mount).rstrip("/") + "/"
        if mine.startswith(theirs):
            return own
    try:
        info = os.stat(group.path)
    except OSError:
        return None
    own_mount = find_mount(own)
    top = own_mount.mountpoint if own_mount is not None else Path("/")
    if (info.st_dev, info.st_ino) in _identities(own, top):
        return own
    return None


def ensure_not_own(group: Cgroup) -> None:
    """Refuse a cgroup that holds this process or is one of its ancestors.

    Tightening it would squeeze the experiment itself (and, on a CI machine, the session running
    it); chaosmem works on child cgroups instead.
    """
    own = holds_self(group)
    if own is not None:
        raise InvalidArgument(
            "target",
            group.spec,
            f"a cgroup that does not hold the chaosmem process itself (chaosmem runs in {own}); "
            "start the service in a child cgroup with chaosmem.local.actions.start_service",
        )


@register_undo("cgroup-limit")
def _undo_limit(entry: Entry) -> str:
    path = Path(entry.target["path"])
    if not path.is_dir():
        return f"{path}: cgroup is gone, nothing to restore"
    group = Cgroup.at(path)
    group.restore_limit_state(entry.undo)
    wanted, now = entry.undo.get("limit"), group.memory_limit()
    if not same_limit(wanted, now):
        raise ChaosmemError(
            f"{path}: restoring the memory limit to {format_size(wanted)} left "
            f"{format_size(now)} in the kernel; set memory.limit_in_bytes by hand"
        )
    return f"{path}: memory limit restored to {format_size(now)}"
