"""Target specs: resolution, and a clear error naming the argument for every bad spec."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.limits.actions import restore_memory_limit, tighten_memory_limit
from chaosmem.limits.probes import memory_limit, memory_usage, oom_kill_count
from chaosmem.targets import resolve_target
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.mounts import parse_mountinfo


@pytest.mark.kernel
def test_process_target_is_its_memory_cgroup(cgroup: Cgroup) -> None:
    proc = cgroup.spawn(["sleep", "30"])
    try:
        assert resolve_target({"type": "process", "pid": proc.pid}) == cgroup
        assert cgroup.pids() == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


def test_pidfile_target(cgroup: Cgroup, tmp_path: Path) -> None:
    proc = cgroup.spawn(["sleep", "30"])
    try:
        (tmp_path / "svc.pid").write_text(f"{proc.pid}\n")
        assert resolve_target({"type": "process", "pidfile": str(tmp_path / "svc.pid")}) == cgroup
    finally:
        proc.kill()
        proc.wait()


def test_configuration_target_is_the_default(cgroup: Cgroup) -> None:
    config = {"chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)}}
    assert memory_limit(configuration=config) is None
    assert memory_usage(configuration=config) == 0
    assert oom_kill_count(configuration=config) == 0


@pytest.mark.parametrize(
    ("spec", "argument"),
    [
        ({"type": "vm"}, "target.type"),
        ("cgroup", "target"),
        ({"type": "process", "pid": 2**22 + 7}, "target.pid"),
        ({"type": "process", "pid": -3}, "target.pid"),
        ({"type": "process"}, "target"),
        ({"type": "process", "pid": 1, "pidfile": "x"}, "target"),
        ({"type": "process", "pidfile": "/nonexistent/pid"}, "target.pidfile"),
        ({"type": "cgroup", "path": "/tmp"}, "target"),
        ({"type": "cgroup", "path": "relative/path"}, "target.path"),
        ({"type": "cgroup", "path": "/sys/fs/cgroup/memory/../../../etc"}, "target"),
        ({"type": "cgroup", "path": "/sys/fs/cgroup/memory/no-such-group"}, "target"),
        ({"type": "cgroup", "pth": "/sys/fs/cgroup/memory"}, "target.pth"),
        ({"type": "service", "name": "never-started"}, "target.name"),
        ({"type": "service", "name": "../etc"}, "target.name"),
        (None, "target"),
    ],
)
def test_bad_targets_name_the_argument(spec: Any, argument: str, state: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve_target(spec, state)
    assert str(info.value).startswith(f"argument '{argument}'")


@pytest.mark.kernel
def test_own_cgroup_and_its_ancestors_are_refused(
    own_cgroup: Cgroup, state: dict[str, Any]
) -> None:
    for spec in (
        {"type": "process", "pid": os.getpid()},
        {"type": "cgroup", "path": str(own_cgroup.path.parent)},
    ):
        with pytest.raises(
            InvalidArgument, match="does not hold the chaosmem process itself"
        ) as info:
            tighten_memory_limit(spec, limit="64Mi", configuration=state)
        assert info.value.name == "target"
    assert own_cgroup.memory_limit() is None or own_cgroup.memory_limit() > 64 << 20


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    spec=st.dictionaries(
        st.sampled_from(["type", "pid", "pidfile", "path", "name", "extra"]),
        st.none()
        | st.integers(-5, 5)
        | st.text(max_size=12)
        | st.booleans()
        | st.sampled_from(["cgroup", "process", "service", "/sys/fs/cgroup/memory"]),
        max_size=4,
    )
)
def test_any_spec_resolves_or_names_the_target(spec: dict[str, Any], state: dict[str, Any]) -> None:
    try:
        resolve_target(spec, state)
    except ChaosmemError as exc:
        assert "argument 'target" in str(exc)


def test_mountinfo_parsing_of_hybrid_and_v2_hosts() -> None:
    text = Path("/proc/self/mountinfo").read_text()
    mounts = parse_mountinfo(text)
    assert any(m.version == 1 for m in mounts)  # this host: v1 memory controller
    v2 = parse_mountinfo("41 31 0:38 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert v2[0].version == 2 and v2[0].to_fs("/kubepods/pod1") == Path("/sys/fs/cgroup/pod1")
    assert v2[0].to_fs("/system.slice") is None
    escaped = parse_mountinfo(r"7 1 0:5 / /mnt/with\040space rw - cgroup cgroup rw,memory" "\n")
    assert escaped[0].mountpoint == Path("/mnt/with space")


@given(st.text(max_size=300))
def test_mountinfo_garbage_never_raises(text: str) -> None:
    for mount in parse_mountinfo(text):
        assert mount.version in (1, 2)


@pytest.mark.kernel
def test_spawned_process_is_charged_to_the_cgroup_from_its_first_byte(cgroup: Cgroup) -> None:
    script = "b = bytearray(40 << 20); b[::4096] = b'x' * len(b[::4096]); import sys; sys.stdout.write('ok'); sys.stdout.flush(); sys.stdin.read()"
    proc = cgroup.spawn(["python3", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.read(2) == b"ok"
        assert cgroup.memory_usage() >= 40 << 20
        assert cgroup.stat()["rss" if cgroup.version == 1 else "anon"] >= 40 << 20
    finally:
        proc.kill()
        proc.communicate()  # reaps it and closes its pipes


@pytest.fixture
def second_memory_mount(tmp_path: Path) -> Iterator[Path]:
    """A second mount of the real v1 memory hierarchy, unmounted afterwards."""
    point = tmp_path / "memory-again"
    point.mkdir()
    subprocess.run(["mount", "-t", "cgroup", "-o", "memory", "x", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_own_cgroup_through_a_second_mount_is_refused(
    own_cgroup: Cgroup, state: dict[str, Any], second_memory_mount: Path
) -> None:
    """Issue 9.7: the check compared paths, so the same cgroups under another mountpoint passed."""
    relative = own_cgroup.path.relative_to(own_cgroup.mount.mountpoint)  # type: ignore[union-attr]
    again = second_memory_mount / relative
    assert os.stat(again).st_ino == os.stat(own_cgroup.path).st_ino  # the very same cgroup
    before = own_cgroup.memory_limit()
    try:
        for path in (again, again.parent):
            with pytest.raises(InvalidArgument, match="does not hold the chaosmem process itself"):
                tighten_memory_limit(
                    {"type": "cgroup", "path": str(path)}, limit="64Mi", configuration=state
                )
    finally:
        # NB: should the check ever let it through, never leave this session squeezed
        restore_memory_limit(configuration=state)
    assert own_cgroup.memory_limit() == before


def test_a_child_through_a_second_mount_is_still_a_target(
    cgroup: Cgroup, state: dict[str, Any], second_memory_mount: Path
) -> None:
    again = second_memory_mount / cgroup.path.relative_to(cgroup.mount.mountpoint)  # type: ignore[union-attr]
    result = tighten_memory_limit(
        {"type": "cgroup", "path": str(again)}, limit="64Mi", configuration=state
    )
    assert result["after"] == 64 << 20
    assert cgroup.memory_limit() == 64 << 20  # one cgroup, two paths
    restore_memory_limit(configuration=state)
    assert cgroup.memory_limit() is None


@pytest.mark.parametrize(
    ("spec", "argument", "keys"),
    [
        ({"type": "cgroup", "path": "/x", "limit": 1}, "target.limit", "path, type"),
        ({"type": "service", "name": "a", "nmae": "b"}, "target.nmae", "name, type"),
        (
            {"type": "pod", "namespace": "shop", "name": "a", "contianer": "c"},
            "target.contianer",
            "container, label_selector, mode, name, namespace, percent, qty, type",
        ),
    ],
)
def test_an_unknown_target_key_is_named_with_the_keys_there_are(
    spec: dict[str, object], argument: str, keys: str
) -> None:
    """Refused before anything is looked up (no cgroup, no API call), local or Kubernetes."""
    with pytest.raises(InvalidArgument) as refused:
        resolve_target(spec, None)
    assert refused.value.name == argument
    assert refused.value.expected == f"no such key for a {spec['type']} target (keys: {keys})"
