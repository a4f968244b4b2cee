"""Where chaosmem creates its cgroups with no configuration (cgroup v1 and v2).

The kernel tests run on this host's cgroup v1 and, in the VM lane, on a real cgroup v2 kernel
where the test process sits in a non-root cgroup holding processes (``/ci.slice/runner.service``),
as a CI runner's job does. The file-tree tests cover the shapes a VM run does not make: a
container's cgroup namespace root, an ancestor without the memory controller.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.mounts import find_mount, memory_cgroup_of
from chaosmem.targets.placement import find_placement, placement_for
from tests.conftest import make_v2_group


@pytest.mark.kernel
def test_children_go_where_the_kernel_lets_chaosmem_make_them(workspace: Cgroup) -> None:
    own = memory_cgroup_of("self")
    placement = find_placement()
    assert placement.problem is None and placement.path == workspace.path
    if workspace.version == 1:
        assert placement.path == own  # v1: a child of our own cgroup, as before
        return
    assert str(os.getpid()) in (own / "cgroup.procs").read_text().split()
    assert placement.path.name == "chaosmem" and placement.owned
    assert placement.path.parent in own.parents  # an ancestor's sub-tree: nobody was moved
    assert (placement.path.parent / "cgroup.procs").read_text().split() == []
    assert "memory" in (workspace.path / "cgroup.controllers").read_text().split()


@pytest.mark.kernel
def test_a_group_holding_processes_cannot_delegate_on_v2_so_the_root_is_used(
    workspace: Cgroup,
) -> None:
    mount = find_mount(workspace.path)
    assert mount is not None
    base = workspace.path if workspace.version == 1 else mount.mountpoint
    busy = Cgroup(base / f"busy-{uuid.uuid4().hex[:8]}", workspace.version)
    busy.path.mkdir()
    sleeper = busy.spawn(["sleep", "600"])
    job = busy.path / "job"
    job.mkdir()
    try:
        placement = find_placement(job)
        if workspace.version == 1:
            assert placement.path == job and placement.problem is None
        else:
            assert placement.path == mount.mountpoint / "chaosmem"
            assert "hierarchy root" in placement.reason and placement.owned
            with pytest.raises(ChaosmemError, match="cannot enable the memory controller"):
                busy.child("x")  # the kernel's own no-internal-process rule
    finally:
        sleeper.kill()
        sleeper.wait()
        job.rmdir()
        busy.remove(grace=1)


def test_nearest_ancestor_without_processes_is_used(v2_root: Path) -> None:
    slice_ = make_v2_group(v2_root / "ci.slice")
    (slice_ / "cgroup.subtree_control").write_text("memory pids\n")
    runner = make_v2_group(slice_ / "runner.service")
    (runner / "cgroup.procs").write_text("4242\n")
    placement = find_placement(runner)
    assert placement.path == slice_ / "chaosmem" and placement.owned
    assert "holds processes" in placement.reason and "nearest ancestor" in placement.reason


def test_ancestors_holding_processes_or_without_memory_are_passed_over(v2_root: Path) -> None:
    outer = make_v2_group(v2_root / "outer")
    (outer / "cgroup.controllers").write_text("pids\n")  # memory is not delegated here
    busy = make_v2_group(outer / "busy")
    (busy / "cgroup.procs").write_text("1\n")
    placement = find_placement(make_v2_group(busy / "job"))
    assert placement.path == v2_root / "chaosmem" and "hierarchy root" in placement.reason


def test_namespace_root_holding_processes_says_what_to_do(v2_root: Path) -> None:
    (v2_root / "memory.max").write_text("max\n")  # a namespace root is a non-root cgroup
    placement = find_placement(v2_root)
    assert placement.problem is not None
    assert "cgroup namespace" in placement.problem and f"mkdir {v2_root}/init" in placement.problem
    assert "never moves processes" in placement.problem


def test_namespace_root_without_processes_is_used(v2_root: Path) -> None:
    (v2_root / "memory.max").write_text("max\n")
    (v2_root / "cgroup.procs").write_text("")
    init = make_v2_group(v2_root / "init")
    (init / "cgroup.procs").write_text("1\n")
    assert find_placement(init).path == v2_root / "chaosmem"


def test_placement_creates_the_subtree_and_says_where_in_one_line(
    v2_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = make_v2_group(v2_root / "runner.service")
    (runner / "cgroup.procs").write_text(f"{os.getpid()}\n")
    with caplog.at_level(logging.INFO, logger="chaostoolkit"):
        group, placement = placement_for(None, own=runner)
    assert group.path == v2_root / "chaosmem" and group.path.is_dir()
    assert "memory" in (v2_root / "cgroup.subtree_control").read_text()
    lines = [r.getMessage() for r in caplog.records if "creating cgroups under" in r.getMessage()]
    assert lines == [f"chaosmem: creating cgroups under {placement.describe()}"]


def test_configured_root_overrides_the_search(v2_root: Path) -> None:
    chosen = make_v2_group(v2_root / "delegated")
    group, placement = placement_for({"chaosmem_cgroup_root": str(chosen)})
    assert group.path == chosen and not placement.owned
    assert "chaosmem_cgroup_root" in placement.reason
    with pytest.raises(InvalidArgument, match="chaosmem_cgroup_root"):
        placement_for({"chaosmem_cgroup_root": 5})


def test_no_place_is_a_clear_error(v2_root: Path) -> None:
    (v2_root / "memory.max").write_text("max\n")  # a namespace root ...
    busy = make_v2_group(v2_root / "busy")
    (busy / "cgroup.procs").write_text("1\n")
    with pytest.raises(ChaosmemError, match="Delegate=yes"):
        placement_for(None, own=busy)
