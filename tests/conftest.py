"""Shared fixtures: real child memory cgroups, a private state dir, and a cgroup v2 tree.

Every cgroup a test creates goes where chaosmem itself would create one with no configuration
(:mod:`chaosmem.targets.placement`): on cgroup v1 a child of this process's own memory cgroup
(never the cgroup itself), on a real cgroup v2 kernel (the VM lane, ``tests/vm/``) a child of
chaosmem's ``chaosmem`` sub-tree. It is removed, with anything still in it, when the test ends.

Tests marked ``kernel`` talk to the kernel's memory cgroups; the VM lane runs them again on a
real cgroup v2 kernel, so their bodies hold for both versions.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.placement import placement_for, release
from tests.kube_double import kube  # noqa: F401  (the Kubernetes API double fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A configuration whose state dir is private to the test (also exported for children)."""
    directory = tmp_path / "state"
    monkeypatch.setenv("CHAOSMEM_STATE_DIR", str(directory))
    monkeypatch.delenv("CHAOSMEM_RUN_ID", raising=False)
    return {"chaosmem_state_dir": str(directory)}


@pytest.fixture
def own_cgroup() -> Cgroup:
    return Cgroup.of_process("self")


@pytest.fixture
def workspace() -> Iterator[Cgroup]:
    """Where chaosmem creates its cgroups on this kernel with no configuration."""
    group, placement = placement_for(None)
    yield group
    if placement.owned:
        release(group.path)


@pytest.fixture
def cgroup(workspace: Cgroup) -> Iterator[Cgroup]:
    """A fresh child memory cgroup (v1 on this host, v2 in the VM lane), removed afterwards."""
    group = workspace.child(f"test-{uuid.uuid4().hex[:8]}")
    try:
        yield group
    finally:
        group.remove(grace=1)


V2_EVENTS = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"


def make_v2_group(path: Path, *, current: int = 0, limit: str = "max") -> Path:
    """A directory laid out exactly like a cgroup v2 memory cgroup's files."""
    path.mkdir(parents=True, exist_ok=True)
    files = {
        "cgroup.controllers": "memory pids\n",
        "cgroup.subtree_control": "\n",
        "cgroup.procs": "",
        "cgroup.events": "populated 0\nfrozen 0\n",
        "memory.max": f"{limit}\n",
        "memory.high": "max\n",
        "memory.current": f"{current}\n",
        "memory.events": V2_EVENTS,
        "memory.events.local": V2_EVENTS,
        "memory.stat": "anon 0\nfile 0\n",
        "memory.swap.max": "max\n",
    }
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.fixture
def v2_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cgroup v2 hierarchy as a file tree, declared through a mount table of its own.

    This host's memory controller is bound to cgroup v1, so the kernel cannot give us a v2
    memory cgroup; the same code paths run against this tree, reached through the same
    mountinfo parsing (``$CHAOSMEM_MOUNTINFO``).
    """
    root = tmp_path / "cgroup2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("\n")
    (root / "cgroup.procs").write_text(f"{os.getpid()}\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        f"41 31 0:38 / {root} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    monkeypatch.setenv("CHAOSMEM_MOUNTINFO", str(mountinfo))
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
