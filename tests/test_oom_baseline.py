"""Where a run's OOM-kill count starts, on the real kernel: a cgroup chaosmem made in the run counts
from 0, one that existed before counts from the run's first look, and every figure agrees.

The watcher, the ``oom_kill_count`` probe, the timeline, the report and the kernel-log matching
all take the run's baseline from :mod:`chaosmem.targets.oombase`. The gaps these tests close: a
service OOM-killed before the control's watch attached (never reported: the watch now starts
as chaosmem makes the cgroup, and counts from 0 when it starts later), a cgroup that existed
before the run with a kill of its own (counted as this run's), a target that appears mid-run
or is made again under the same name, and a second run on the same state dir.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosmem.control import _Run
from chaosmem.ledger import set_current_run
from chaosmem.limits.probes import oom_kill_count
from chaosmem.local.actions import start_service, stop_service
from chaosmem.report.context import experiment_context
from chaosmem.report.series import build_series
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.kmsg import KmsgReader
from chaosmem.targets.oomwatch import OomWatcher, kernel_path
from chaosmem.timeline import Recorder
from tests.chaos_run import chaos_run
from tests.conftest import free_port

pytestmark = pytest.mark.kernel

#: dd reads into a 64 MiB buffer, touching every page: far above a 32 MiB limit, always killed.
KILLED = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
#: A service whose first child is OOM-killed at once, then one that lives.
DIES_THEN_SLEEPS = ["sh", "-c", " ".join(KILLED) + " 2>/dev/null; exec sleep 60"]
CONTROL = {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control",
                                            "arguments": {"interval": "5s"}}}  # fmt: skip


def kill_one(group: Cgroup) -> None:
    """One real OOM kill in ``group`` (its limit must be below 64 MiB)."""
    process = group.spawn(KILLED, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert process.wait(timeout=60) == -9


def wait_for(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """A bounded wait for something the watcher's thread does (not a timed assertion)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def probe(name: str, target: dict[str, Any], tolerance: Any) -> dict[str, Any]:
    return {
        "type": "probe", "name": name, "tolerance": tolerance,
        "provider": {"type": "python", "module": "chaosmem.limits.probes",
                     "func": "oom_kill_count", "arguments": {"target": target}},
    }  # fmt: skip


def extension_of(journal: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in journal["extensions"] if e["name"] == "chaosmem")


def report_rows(journal: dict[str, Any], source: Path) -> dict[str, dict[str, Any]]:
    context = experiment_context(journal, source=str(source), environ={})
    return {row["name"]: row for row in context["timeline"]["targets"]}


# -- the kernel log from a moment in the past -------------------------------------------------


def test_the_kernel_log_from_a_moment_holds_a_kill_logged_before_the_reader_opened(
    cgroup: Cgroup,
) -> None:
    cgroup.set_memory_limit(32 << 20)
    since = time.monotonic()
    kill_one(cgroup)
    path = kernel_path(cgroup)
    assert path is not None
    ours = [r for r in KmsgReader(since=since).read() if r.in_cgroup(path) or r.command == "dd"]
    assert [r.command for r in ours] == ["dd"]
    assert ours[0].monotonic >= since
    assert not [r for r in KmsgReader().read() if r.in_cgroup(path)]  # from now on: none


# -- the watcher from a baseline ---------------------------------------------------------------


@pytest.fixture
def run_id(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    run = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CHAOSMEM_RUN_ID", run)
    yield run
    set_current_run(None)


@pytest.fixture
def later_cgroup(workspace: Cgroup) -> Iterator[Path]:
    """A path where a cgroup does not exist yet (the test makes it); removed afterwards."""
    path = workspace.path / f"test-later-{uuid.uuid4().hex[:8]}"
    yield path
    if path.is_dir():
        Cgroup.at(path).remove(grace=1)


def _run(tmp_path: Path, state: dict[str, Any], run: str, specs: list[dict[str, Any]]) -> _Run:
    recorder = Recorder(directory=tmp_path / "run", targets=specs, configuration=state, sources=[])
    return _Run(run, Path(state["chaosmem_state_dir"]), tmp_path / "run", state, specs, recorder)


def test_a_target_that_appears_mid_run_counts_from_its_creation_and_again_when_made_anew(
    tmp_path: Path, state: dict[str, Any], run_id: str, workspace: Cgroup, later_cgroup: Path
) -> None:
    spec = {"type": "cgroup", "path": str(later_cgroup)}
    run = _run(tmp_path, state, run_id, [spec])
    run.watch_targets()  # the run looks: nothing there yet
    assert not run.watchers

    group = workspace.child(later_cgroup.name)
    group.set_memory_limit(32 << 20)
    kill_one(group)  # before any watch: the cgroup's whole life is this run's
    run.watch_targets()
    (watcher,) = run.watchers.values()
    assert isinstance(watcher, OomWatcher)
    wait_for(lambda: len(watcher.events) == 1, "the kill before the watch is recorded")
    assert oom_kill_count(spec, configuration=state) == 1
    assert watcher.events[0].detail.get("victim_command") == "dd"  # the kernel's own report

    group.remove(grace=1)  # made again under the same name: a new cgroup, counting from 0
    again = workspace.child(later_cgroup.name)
    again.set_memory_limit(32 << 20)
    kill_one(again)
    run.watch_targets()
    (second,) = run.watchers.values()
    assert second is not watcher
    wait_for(lambda: len(second.events) == 1, "the new cgroup's kill is recorded")
    assert oom_kill_count(spec, configuration=state) == 2  # the run's, for the path

    _, timeline = run.finish()
    kills = [r for r in timeline if r.get("event") == "oom-kill"]
    assert [(k["count"], k["kernel_count"]) for k in kills] == [(1, 1), (2, 1)]


def test_a_service_is_watched_from_the_moment_its_cgroup_is_made(
    tmp_path: Path, state: dict[str, Any], run_id: str
) -> None:
    spec = {"type": "service", "name": "brief"}
    run = _run(tmp_path, state, run_id, [spec])
    start_service(name="brief", command=DIES_THEN_SLEEPS, memory_limit="32Mi", configuration=state)
    try:
        # no activity has ended: start_service itself had the control watch the new cgroup
        (watcher,) = run.watchers.values()
        assert isinstance(watcher, OomWatcher)
        wait_for(lambda: len(watcher.events) == 1, "the kill in the new service is recorded")
    finally:
        stop_service(name="brief", grace=1, configuration=state)  # in the same "activity"
    _, timeline = run.finish()
    (kill,) = [r for r in timeline if r.get("event") == "oom-kill"]
    assert kill["target"] == spec and kill["count"] == 1
    assert kill["victim_command"] == "dd"


def test_a_service_the_run_made_before_its_control_looked_counts_from_0(
    tmp_path: Path, state: dict[str, Any], run_id: str
) -> None:
    # as when another process of the run (a `process` activity) starts it: the ledger says whose
    run: _Run | None = None
    started = start_service(
        name="early", command=DIES_THEN_SLEEPS, memory_limit="32Mi", configuration=state
    )
    try:
        group = Cgroup.at(started["cgroup"])
        wait_for(lambda: group.oom_kill_count() == 1, "the kill before the control looked")
        spec = {"type": "service", "name": "early"}
        run = _run(tmp_path, state, run_id, [spec])
        assert oom_kill_count(spec, configuration=state) == 1
        run.watch_targets()
        (watcher,) = run.watchers.values()
        assert isinstance(watcher, OomWatcher)
        wait_for(lambda: len(watcher.events) == 1, "the kill before the watch is recorded")
        assert watcher.baseline.why == "created by chaosmem in this run"
        assert watcher.events[0].detail.get("victim_command") == "dd"
    finally:
        stop_service(name="early", grace=1, configuration=state)
        if run is not None:
            run.finish()


def test_a_cgroup_with_an_earlier_kill_counts_from_the_runs_first_look(
    tmp_path: Path, state: dict[str, Any], run_id: str, cgroup: Cgroup
) -> None:
    cgroup.set_memory_limit(32 << 20)
    kill_one(cgroup)  # before the run: not this run's
    spec = cgroup.spec
    run = _run(tmp_path, state, run_id, [spec])
    run.watch_targets()
    (watcher,) = run.watchers.values()
    assert oom_kill_count(spec, configuration=state) == 0
    kill_one(cgroup)
    wait_for(lambda: len(watcher.events) == 1, "the run's kill is recorded")
    assert oom_kill_count(spec, configuration=state) == 1
    _, timeline = run.finish()
    (kill,) = [r for r in timeline if r.get("event") == "oom-kill"]
    assert (kill["count"], kill["kernel_count"]) == (1, 2)


# -- real chaos runs ---------------------------------------------------------------------------


def test_a_service_killed_while_start_service_waits_is_the_runs_one_kill(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    port = free_port()
    orders = {"type": "service", "name": "orders"}
    # dd is OOM-killed first, then the service serves: start_service returns only once the kill
    # is long over (a control that watched only after each activity never saw it).
    command = [
        "sh", "-c",
        f"{' '.join(KILLED)} 2>/dev/null; "
        f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1",
    ]  # fmt: skip
    experiment = {
        "title": "a service OOM-killed while start_service waits",
        "description": "its cgroup was made by this run: its kill is the run's",
        "controls": [CONTROL],
        "method": [
            {
                "type": "action", "name": "start-orders",
                "provider": {"type": "python", "module": "chaosmem.local.actions",
                             "func": "start_service",
                             "arguments": {"name": "orders", "command": command,
                                           "memory_limit": "48Mi",
                                           "ready_url": f"http://127.0.0.1:{port}/"}},
            },
            probe("kills-in-orders", orders, 1),
        ],
    }  # fmt: skip
    _, path = chaos_run(tmp_path, "before-watch", experiment, env=_env(state))
    journal = json.loads(path.read_text())
    assert journal["status"] == "completed", journal
    assert journal["run"][1]["output"] == 1
    extension = extension_of(journal)
    (kill,) = extension["oom_kills"]
    assert kill["target"] == orders and kill["count"] == 1
    assert kill["victim_command"] == "dd" and kill["source"].startswith("kernel log")
    started = next(
        m for m in extension["timeline"]
        if m.get("event") == "activity-end" and m.get("name") == "start-orders"
    )  # fmt: skip
    assert kill["at"] < started["t"]  # the kernel's time of the kill, inside start_service
    rows = report_rows(journal, path)
    assert rows["orders"]["oom_kill_total"] == 1
    assert len(rows["orders"]["oom_kills"]) == 1


def test_a_pre_existing_cgroups_earlier_kill_is_no_runs_and_a_second_run_inherits_none(
    tmp_path: Path, state: dict[str, Any], cgroup: Cgroup
) -> None:
    cgroup.set_memory_limit(32 << 20)
    kill_one(cgroup)  # before any run
    target = cgroup.spec
    stress = {
        "type": "action", "name": "outgrow",
        "provider": {"type": "python", "module": "chaosmem.stress.actions",
                     "func": "inject_allocation_stress",
                     "arguments": {"target": target, "size": "128Mi", "wait": True}},
    }  # fmt: skip
    first = {
        "title": "one kill in a cgroup that had one before",
        "description": "the earlier kill is not this run's",
        "controls": [CONTROL],
        "steady-state-hypothesis": {"title": "no kill yet", "probes": [probe("none", target, 0)]},
        "method": [stress, probe("kills-after", target, 1)],
    }  # fmt: skip
    _, path = chaos_run(tmp_path, "first", first, env=_env(state))
    journal = json.loads(path.read_text())
    assert journal["steady_states"]["before"]["steady_state_met"] is True, journal
    assert journal["run"][1]["output"] == 1
    (kill,) = extension_of(journal)["oom_kills"]
    assert (kill["count"], kill["kernel_count"]) == (1, 2)
    assert report_rows(journal, path)[cgroup.path.name]["oom_kill_total"] == 1

    second = {
        "title": "the same cgroup, the same state dir, no kill",
        "description": "the first run's kill is not this run's",
        "controls": [CONTROL],
        "method": [probe("kills", target, 0)],
    }  # fmt: skip
    _, path = chaos_run(tmp_path, "second", second, env=_env(state))
    journal = json.loads(path.read_text())
    assert journal["run"][0]["output"] == 0, journal
    assert extension_of(journal)["oom_kills"] == []
    assert report_rows(journal, path)[cgroup.path.name]["oom_kill_total"] == 0
    assert cgroup.oom_kill_count() == 2


def test_a_service_started_outside_the_run_is_a_pre_existing_cgroup(
    tmp_path: Path, state: dict[str, Any]
) -> None:
    started = start_service(
        name="outside", command=["sh", "-c", f"{' '.join(KILLED)}; exec sleep 60"],
        memory_limit="32Mi", configuration=state,
    )  # fmt: skip
    try:
        group = Cgroup.at(started["cgroup"])
        wait_for(lambda: group.oom_kill_count() == 1, "the kill outside any run")
        experiment = {
            "title": "a service a run did not start",
            "description": "its kill before the run is not the run's",
            "controls": [CONTROL],
            "method": [probe("kills", {"type": "service", "name": "outside"}, 0)],
        }  # fmt: skip
        _, path = chaos_run(tmp_path, "outside", experiment, env=_env(state))
        journal = json.loads(path.read_text())
        assert journal["run"][0]["output"] == 0, journal
        assert extension_of(journal)["oom_kills"] == []
    finally:
        stop_service(name="outside", grace=1, configuration=state)


def test_a_leftover_service_cgroup_is_made_anew_not_joined(
    state: dict[str, Any], workspace: Cgroup
) -> None:
    leftover = workspace.child("chaosmem-leftover")
    try:
        leftover.set_memory_limit(32 << 20)
        kill_one(leftover)  # a crash left it, with a kill of its own
        started = start_service(
            name="leftover", command=["sleep", "60"], memory_limit="32Mi", configuration=state
        )
        assert started["cgroup"] == str(leftover.path)
        assert Cgroup.at(leftover.path).oom_kill_count() == 0  # a new cgroup
    finally:
        stop_service(name="leftover", grace=1, configuration=state)
        if leftover.path.is_dir():
            leftover.remove(grace=1)


def _env(state: dict[str, Any]) -> dict[str, str]:
    return {"CHAOSMEM_STATE_DIR": state["chaosmem_state_dir"]}


# -- the report: a run's count starts at 0 -----------------------------------------------------


def test_a_run_count_above_zero_at_the_first_sample_is_a_kill_in_the_report() -> None:
    timeline = [
        {"t": 100.0, "kind": "sample", "targets": [
            {"name": "orders", "oom_kills": 1, "oom_kills_of": "run", "usage": 10}]},
        {"t": 101.0, "kind": "sample", "targets": [
            {"name": "orders", "oom_kills": 1, "oom_kills_of": "run", "usage": 10}]},
        {"t": 100.0, "kind": "sample", "targets": [
            {"name": "legacy", "oom_kills": 3, "usage": 10}]},
    ]  # fmt: skip
    rows = {r["name"]: r for r in build_series(timeline, 100.0)["targets"]}
    assert rows["orders"]["oom_kill_total"] == 1
    assert [k["count"] for k in rows["orders"]["oom_kills"]] == [1]
    assert rows["legacy"]["oom_kill_total"] == 0  # the kernel's counter: its first value is old
