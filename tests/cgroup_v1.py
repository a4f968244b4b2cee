"""A real memory cgroup (v1) under this process's own, for tests that need the kernel's numbers.

Not a mock: limits, usage and OOM kills come from the kernel. Used until ``chaosmem.targets``
lands in this branch; it reads the same files a cgroup target does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MEMORY_ROOT = Path("/sys/fs/cgroup/memory")


def own_memory_cgroup() -> Path | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = MEMORY_ROOT / path.lstrip("/")
            return directory if (directory / "memory.limit_in_bytes").exists() else None
    return None


class CgroupV1:
    """Reads a v1 memory cgroup the way a cgroup target does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def memory_limit(self) -> int | None:
        value = int((self.path / "memory.limit_in_bytes").read_text())
        return None if value >= 1 << 62 else value

    def memory_usage(self) -> int:
        return int((self.path / "memory.usage_in_bytes").read_text())

    def oom_kill_count(self) -> int:
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0


class ChildCgroup(CgroupV1):
    """A child memory cgroup with a limit; ``remove()`` kills what runs in it and deletes it."""

    def __init__(self, limit: int) -> None:
        parent = own_memory_cgroup()
        if parent is None:
            raise RuntimeError("no writable cgroup v1 memory controller")
        super().__init__(parent / f"chaosmem-test-{uuid.uuid4().hex[:8]}")
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit))

    def run_allocating(self, size: int) -> subprocess.Popen[bytes]:
        """A Python child, moved into this cgroup first, that touches ``size`` bytes."""
        code = (
            "import os,sys,time;"
            f"open({str(self.path / 'cgroup.procs')!r},'w').write(str(os.getpid()));"
            f"b=bytearray({size});time.sleep(30)"
        )
        return subprocess.Popen([sys.executable, "-c", code])

    def remove(self) -> None:
        for _ in range(50):
            pids = (self.path / "cgroup.procs").read_text().split()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.05)
        self.path.rmdir()
