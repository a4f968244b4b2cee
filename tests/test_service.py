"""start_service / stop_service: a real process in a real child cgroup, recorded and removed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.limits.actions import restore_memory_limit, tighten_memory_limit
from chaosmem.limits.probes import memory_limit, oom_kill_count
from chaosmem.local.actions import start_service, stop_service
from chaosmem.rollback import rollback
from chaosmem.stress.actions import inject_allocation_stress
from chaosmem.targets import resolve_target
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO, free_port


def allocator(port: int) -> list[str]:
    return [sys.executable, str(REPO / "demo" / "allocator.py"), "--port", str(port)]


@pytest.mark.kernel
def test_start_ready_target_and_stop(state: dict[str, Any], workspace: Cgroup) -> None:
    port = free_port()
    result = start_service(
        "orders",
        allocator(port),
        memory_limit="128Mi",
        env={"GOGC": 50, "SECRET_TOKEN": "hunter2"},
        ready_url=f"http://127.0.0.1:{port}/healthz",
        configuration=state,
    )
    cgroup = Path(result["cgroup"])
    own = resolve_target({"type": "process", "pid": os.getpid()}).spec["path"]
    assert cgroup.is_dir() and cgroup.parent == workspace.path  # where chaosmem may create it
    assert str(cgroup) != own and (workspace.version == 2 or str(cgroup.parent) == own)
    assert str(result["pid"]) in (cgroup / "cgroup.procs").read_text()
    environ = Path(f"/proc/{result['pid']}/environ").read_bytes().split(b"\0")
    assert b"GOGC=50" in environ
    assert memory_limit({"type": "service", "name": "orders"}, state) == 128 << 20
    assert Path(result["pidfile"]).read_text().strip() == str(result["pid"])
    ledger_text = (Path(state["chaosmem_state_dir"]) / "ledger.jsonl").read_text()
    assert "hunter2" not in ledger_text and "SECRET_TOKEN" in ledger_text  # names, never values
    stopped = stop_service("orders", configuration=state)
    assert stopped["stopped_pids"] == [result["pid"]]
    assert not cgroup.exists()
    with pytest.raises(InvalidArgument):
        resolve_target({"type": "service", "name": "orders"}, state)


def test_a_service_that_dies_before_ready_is_cleaned_up(state: dict[str, Any]) -> None:
    port = free_port()
    with pytest.raises(ChaosmemError, match="exited before it became ready"):
        start_service(
            "broken",
            [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
            ready_url=f"http://127.0.0.1:{port}/",
            ready_timeout="10s",
            configuration=state,
        )
    assert rollback(Path(state["chaosmem_state_dir"])) == []  # nothing left open


def test_a_port_already_in_use_is_refused(state: dict[str, Any]) -> None:
    port = free_port()
    first = start_service(
        "first", allocator(port), ready_url=f"http://127.0.0.1:{port}/healthz", configuration=state
    )
    try:
        with pytest.raises(ChaosmemError, match="already answers"):
            start_service(
                "second",
                allocator(port),
                ready_url=f"http://127.0.0.1:{port}/healthz",
                configuration=state,
            )
    finally:
        stop_service("first", configuration=state)
    assert not Path(first["cgroup"]).exists()


@pytest.mark.kernel
def test_rollback_stops_a_service_left_running(state: dict[str, Any]) -> None:
    result = start_service("left", ["sleep", "600"], configuration=state)
    steps = rollback(Path(state["chaosmem_state_dir"]))
    assert [s.ok for s in steps] == [True]
    assert not Path(result["cgroup"]).exists()
    if Path(result["cgroup"]).parent.name == "chaosmem":  # cgroup v2: chaosmem's own sub-tree
        assert not Path(result["cgroup"]).parent.exists()  # goes once empty, after a crash too
    assert (
        not Path(f"/proc/{result['pid']}").exists()
        or "zombie" in Path(f"/proc/{result['pid']}/status").read_text()
    )


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "a/b", "command": "sleep 1"}, "name"),
        ({"name": "ok", "command": ""}, "command"),
        ({"name": "ok", "command": ["sleep", 5]}, "command"),
        ({"name": "ok", "command": "sleep 1", "memory_limit": "lots"}, "memory_limit"),
        ({"name": "ok", "command": "sleep 1", "env": {"A": {"b": 1}}}, "env.A"),
        ({"name": "ok", "command": "sleep 1", "ready_url": "http://10.1.2.3/"}, "ready_url"),
        ({"name": "ok", "command": "sleep 1", "ready_url": "ftp://127.0.0.1/"}, "ready_url"),
        ({"name": "ok", "command": "sleep 1", "ready_timeout": "soon"}, "ready_timeout"),
        ({"name": "ok", "command": "sleep 1", "cwd": "/nonexistent"}, "cwd"),
    ],
)
def test_bad_arguments(state: dict[str, Any], kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        start_service(configuration=state, **kwargs)
    assert info.value.name == argument


def test_cgroup_root_must_be_a_memory_cgroup(state: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="chaosmem_cgroup_root"):
        start_service("x", "sleep 1", configuration={**state, "chaosmem_cgroup_root": "/tmp"})


@pytest.mark.kernel
def test_issue_11_check_with_nothing_configured_but_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's check: no chaosmem configuration (on v2 in the VM lane: from a non-root cgroup
    holding processes) and the state dir only in the configuration, never in the environment."""
    monkeypatch.delenv("CHAOSMEM_STATE_DIR", raising=False)
    config = {"chaosmem_state_dir": str(tmp_path / "state")}
    target = {"type": "service", "name": "v2hog"}
    result = start_service("v2hog", ["sleep", "600"], memory_limit="256Mi", configuration=config)
    group = Cgroup.at(result["cgroup"])
    try:
        limit_file = "memory.max" if group.version == 2 else "memory.limit_in_bytes"
        assert (group.path / limit_file).read_text().strip() == str(256 << 20)
        tighten_memory_limit(target, limit="64Mi", configuration=config)
        assert memory_limit(target, config) == 64 << 20
        stressed = inject_allocation_stress(target, size="200Mi", wait=True, configuration=config)
        assert stressed["oom_killed"] is True
        assert oom_kill_count(target, config) >= 1
        restored = restore_memory_limit(target, configuration=config)
        assert restored["count"] == 1
        assert (group.path / limit_file).read_text().strip() == str(256 << 20)
    finally:
        stopped = stop_service("v2hog", configuration=config)
    assert stopped["oom_kills"] >= 1 and not group.path.exists()
    if group.version == 2:
        assert group.path.parent.name == "chaosmem"  # chaosmem's own sub-tree ...
        assert not group.path.parent.exists()  # ... removed once empty
