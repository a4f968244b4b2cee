"""A limit is never silently wrong, and one run never undoes another's (issues 9.1 and 9.3).

Real kernel: each test tightens a fresh child cgroup of this process's v1 memory cgroup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.host import host_memory
from chaosmem.ledger import Ledger, set_current_run
from chaosmem.limits.actions import restore_memory_limit, tighten_memory_limit
from chaosmem.targets import LimitRefused
from chaosmem.targets.cgroup import Cgroup, LimitMismatch


def spec(group: Cgroup) -> dict[str, Any]:
    return {"type": "cgroup", "path": str(group.path)}


def kernel_limits(group: Cgroup) -> tuple[str, str]:
    return (
        (group.path / "memory.limit_in_bytes").read_text().strip(),
        (group.path / "memory.memsw.limit_in_bytes").read_text().strip() if group.has_memsw else "",
    )


@pytest.fixture
def no_run() -> Any:
    set_current_run(None)
    yield
    set_current_run(None)


@pytest.mark.parametrize("limit", ["16Ei", "18446744073709551616", "1e400", "1e20", 10**20])
def test_a_limit_the_kernel_cannot_hold_is_refused_and_nothing_changes(
    cgroup: Cgroup, state: dict[str, Any], limit: object
) -> None:
    """Before: "16Ei" and 2**64 set 0 (and said after=0), "1e400" set 0 then OverflowError,
    "1e20" left 7766279631452241920 in the kernel."""
    before = kernel_limits(cgroup)
    with pytest.raises(InvalidArgument) as info:
        tighten_memory_limit(spec(cgroup), limit=limit, configuration=state)
    assert info.value.name == "limit"
    assert kernel_limits(cgroup) == before
    assert Ledger(Path(state["chaosmem_state_dir"])).read().open() == []


def test_a_limit_that_reads_back_as_unlimited_is_refused(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """4Ei fits the kernel's counter but reads back as 'no limit': refused even when asked."""
    with pytest.raises(InvalidArgument, match="cannot hold more"):
        tighten_memory_limit(spec(cgroup), limit="4Ei", allow_above_host=True, configuration=state)
    assert cgroup.memory_limit() is None


def test_above_host_memory_needs_allow_above_host(cgroup: Cgroup, state: dict[str, Any]) -> None:
    host = host_memory()
    assert host is not None
    above = host + (1 << 30)
    with pytest.raises(InvalidArgument, match="allow_above_host"):
        tighten_memory_limit(spec(cgroup), limit=above, configuration=state)
    assert cgroup.memory_limit() is None
    result = tighten_memory_limit(
        spec(cgroup), limit=above, allow_above_host=True, configuration=state
    )
    assert result["after"] == above
    assert int(kernel_limits(cgroup)[0]) == above
    restore_memory_limit(configuration=state)
    assert cgroup.memory_limit() is None


def test_page_rounding_is_not_a_mismatch(cgroup: Cgroup, state: dict[str, Any]) -> None:
    result = tighten_memory_limit(spec(cgroup), limit=(64 << 20) + 123, configuration=state)
    assert result["after"] == 64 << 20  # the kernel keeps whole pages
    assert int(kernel_limits(cgroup)[0]) == 64 << 20


@pytest.mark.parametrize(
    ("written", "kernel_holds"),
    [(2**64, "0"), (10**20, "7766279631452241920"), (2**63, "9223372036854771712")],
)
def test_the_kernel_holding_another_limit_is_put_back_and_refused(
    cgroup: Cgroup, written: int, kernel_holds: str
) -> None:
    """What we write, we read back, on the real kernel: v1 takes 2**64 as 0, 1e20 as
    7766279631452241920 and 2**63 as "unlimited". Written directly (below every argument check),
    each is put back and refused, so nothing is left changed."""
    before = kernel_limits(cgroup)
    with pytest.raises(LimitMismatch, match=f"asked for a limit of {written} bytes") as info:
        cgroup.set_memory_limit(written)
    assert isinstance(info.value, LimitRefused)  # tighten closes its entry as not-applied
    assert kernel_limits(cgroup) == before
    # and the kernel really does hold that value for a moment: write it by hand to show it
    (cgroup.path / "memory.limit_in_bytes").write_text(str(written))
    assert (cgroup.path / "memory.limit_in_bytes").read_text().strip() == kernel_holds
    (cgroup.path / "memory.limit_in_bytes").write_text("-1")


def test_bare_restore_in_a_run_restores_this_run_only(
    own_cgroup: Cgroup, state: dict[str, Any], no_run: None
) -> None:
    """Two runs on one state dir: B's bare restore_memory_limit() used to restore A's limit
    in the middle of A."""
    a_group = own_cgroup.child("test-run-a")
    b_group = own_cgroup.child("test-run-b")
    try:
        set_current_run("run-A")
        tighten_memory_limit(spec(a_group), limit="64Mi", configuration=state)
        set_current_run("run-B")
        tighten_memory_limit(spec(b_group), limit="96Mi", configuration=state)
        result = restore_memory_limit(configuration=state)
        assert [r["target"] for r in result["restored"]] == [spec(b_group)]
        assert b_group.memory_limit() is None
        assert a_group.memory_limit() == 64 << 20  # A's change stays
        set_current_run("run-A")
        assert restore_memory_limit(configuration=state)["count"] == 1
        assert a_group.memory_limit() is None
    finally:
        a_group.remove(grace=1)
        b_group.remove(grace=1)


def test_bare_restore_outside_a_run_restores_every_open_one(
    own_cgroup: Cgroup, state: dict[str, Any], no_run: None
) -> None:
    groups = [own_cgroup.child(f"test-all-{i}") for i in range(2)]
    try:
        for run, group in zip(("run-A", "run-B"), groups, strict=True):
            set_current_run(run)
            tighten_memory_limit(spec(group), limit="64Mi", configuration=state)
        set_current_run(None)
        assert restore_memory_limit(configuration=state)["count"] == 2
        assert [g.memory_limit() for g in groups] == [None, None]
    finally:
        for group in groups:
            group.remove(grace=1)


def test_second_tighten_by_another_run_fails_and_names_the_run(
    cgroup: Cgroup, state: dict[str, Any], no_run: None
) -> None:
    set_current_run("run-A")
    tighten_memory_limit(spec(cgroup), limit="64Mi", configuration=state)
    set_current_run("run-B")
    with pytest.raises(ChaosmemError, match="already tightened by run run-A") as info:
        tighten_memory_limit(spec(cgroup), limit="32Mi", configuration=state)
    assert "chaosmem rollback --run run-A" in str(info.value)
    assert cgroup.memory_limit() == 64 << 20
    set_current_run("run-A")  # the same run may tighten again (and restores to the first value)
    tighten_memory_limit(spec(cgroup), limit="48Mi", configuration=state)
    assert restore_memory_limit(configuration=state)["count"] == 2
    assert cgroup.memory_limit() is None


def _experiment(title: str, method: list[dict[str, Any]], state_dir: str) -> dict[str, Any]:
    return {
        "title": title,
        "description": "two runs on one state dir",
        "configuration": {"chaosmem_state_dir": state_dir},
        "controls": [
            {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
        ],
        "method": method,
    }


def _python(
    module: str, func: str, name: str, kind: str = "action", **arguments: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "name": name,
        "provider": {"type": "python", "module": module, "func": func, "arguments": arguments},
    }


def test_two_chaos_runs_b_bare_restore_leaves_a_tightened(
    cgroup: Cgroup, state: dict[str, Any], tmp_path: Path
) -> None:
    """The issue's check, with two real `chaos run`s on one state dir: run B's bare
    restore_memory_limit() used to restore run A's limit in the middle of A, silently."""
    import json
    import os
    import subprocess
    import time

    from tests.chaos_run import CHAOS, ROOT, chaos_run

    directory = state["chaosmem_state_dir"]
    flag = tmp_path / "b-done"
    target = spec(cgroup)
    run_a = _experiment(
        "A",
        [
            _python(
                "chaosmem.limits.actions",
                "tighten_memory_limit",
                "tighten",
                target=target,
                limit="64Mi",
            ),
            {
                "type": "action",
                "name": "wait-for-b",
                "provider": {
                    "type": "process",
                    "path": "sh",
                    "arguments": f"-c 'for i in $(seq 600); do [ -e {flag} ] && exit 0; sleep 0.1; done; exit 1'",
                },
            },
            _python(
                "chaosmem.limits.probes",
                "memory_limit",
                "limit-after-b",
                kind="probe",
                target=target,
            ),
        ],
        directory,
    )
    run_b = _experiment(
        "B", [_python("chaosmem.limits.actions", "restore_memory_limit", "bare-restore")], directory
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "a.json").write_text(json.dumps(run_a))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CHAOSMEM_RUN_ID", None)
    a = subprocess.Popen(
        [
            str(CHAOS),
            "--no-version-check",
            "--no-log-file",
            "run",
            "--journal-path",
            "a.journal.json",
            "a.json",
        ],
        cwd=tmp_path / "a",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while cgroup.memory_limit() != 64 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cgroup.memory_limit() == 64 << 20
        _, b_journal = chaos_run(tmp_path / "b", "b", run_b, env={"CHAOSMEM_RUN_ID": ""})
        flag.touch()
        assert a.wait(timeout=60) == 0
    finally:
        flag.touch()
        if a.poll() is None:
            a.kill()
            a.wait()
    b_result = json.loads(b_journal.read_text())["run"][0]["output"]
    assert b_result["count"] == 0  # B restored nothing of A's
    a_run = json.loads((tmp_path / "a" / "a.journal.json").read_text())["run"]
    assert [r["output"] for r in a_run if r["activity"]["name"] == "limit-after-b"] == [64 << 20]
    assert cgroup.memory_limit() is None  # A's own control restored it at A's end


def test_another_runs_limit_is_found_through_a_second_mount(
    cgroup: Cgroup, state: dict[str, Any], tmp_path: Path, no_run: None
) -> None:
    """The same cgroup under another mountpoint of the hierarchy is still the same target."""
    import subprocess

    point = tmp_path / "memory-again"
    point.mkdir()
    subprocess.run(["mount", "-t", "cgroup", "-o", "memory", "x", str(point)], check=True)
    try:
        again = point / cgroup.path.relative_to(cgroup.mount.mountpoint)  # type: ignore[union-attr]
        set_current_run("run-A")
        tighten_memory_limit(spec(cgroup), limit="64Mi", configuration=state)
        set_current_run("run-B")
        with pytest.raises(ChaosmemError, match="already tightened by run run-A"):
            tighten_memory_limit(
                {"type": "cgroup", "path": str(again)}, limit="32Mi", configuration=state
            )
        set_current_run("run-A")
        assert restore_memory_limit({"type": "cgroup", "path": str(again)}, state)["count"] == 1
        assert cgroup.memory_limit() is None
    finally:
        set_current_run(None)
        restore_memory_limit(configuration=state)
        subprocess.run(["umount", str(point)], check=True)
