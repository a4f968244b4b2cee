"""The ledger is never trusted blindly and the state dir is ours (issues 9.4 and 9.5).

Real parts: services run in real child memory cgroups; rollback runs as the real command.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.ledger import Ledger, parse_ledger
from chaosmem.leftovers import sweep
from chaosmem.local.actions import start_service, stop_service
from chaosmem.state import state_dir
from chaosmem.targets.cgroup import Cgroup
from chaosmem.timeline import Recorder
from chaosmem.traffic.probes import replay_summary, status_ratio
from chaosmem.traffic.results import set_latest, write_json_atomic

CHAOSMEM = str(Path(sys.executable).parent / "chaosmem")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def chaosmem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAOSMEM, *args], capture_output=True, text=True, timeout=120)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


@pytest.fixture
def root(cgroup: Cgroup, state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A configuration whose services are created under a fresh child cgroup; whatever a failing
    test leaves there is swept (the cgroup fixture removes the group, not its children)."""
    try:
        yield {**state, "chaosmem_cgroup_root": str(cgroup.path)}
    finally:
        sweep(Path(state["chaosmem_state_dir"]), root=cgroup.path)


# -- 9.4: the ledger is never trusted blindly ----------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text.splitlines()[0]) // 2] + "\n" + text,  # first line cut
        lambda text: "\x00\xff garbage \x8f\n" + text.replace("\n", "\n", 1),  # bytes prepended
    ],
    ids=["cut-first-line", "bytes-prepended"],
)
def test_unreadable_lines_make_rollback_fail_and_sweep_ends_the_leftover(
    root: dict[str, Any], cgroup: Cgroup, damage: Any
) -> None:
    """Before: the torn entry was silently lost, rollback said "nothing to roll back" (exit 0)
    and the service process and its cgroup stayed."""
    started = start_service("swept", SLEEPER, configuration=root)
    directory = Path(root["chaosmem_state_dir"])
    ledger = directory / "ledger.jsonl"
    text = ledger.read_text()
    # the open entry itself becomes unreadable: the ledger no longer knows the service
    first, _, rest = text.partition("\n")
    broken = damage(first + "\n")
    if broken.count("\n") > 1:  # cut: keep only the cut half of the entry
        broken = broken.splitlines()[0] + "\n"
    ledger.write_text(broken + rest)
    assert Ledger(directory).read().open() == []

    result = chaosmem("rollback", "--state-dir", str(directory))
    assert result.returncode == 1, result
    assert "1 line(s)" in result.stderr and "could not be read" in result.stderr
    assert alive(started["pid"])  # rollback alone could not know it

    swept = chaosmem(
        "rollback", "--state-dir", str(directory), "--sweep", "--cgroup-root", str(cgroup.path)
    )
    assert f"service cgroup {started['cgroup']}: ended pids [{started['pid']}]" in swept.stdout
    assert not Path(started["cgroup"]).exists()
    deadline = time.monotonic() + 120  # a hang guard, not a speed figure
    while alive(started["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(started["pid"]), "hung: the ended process is still alive"


def test_sweep_leaves_a_live_run_alone(root: dict[str, Any], cgroup: Cgroup) -> None:
    """The owner of this entry (this test process) is alive: a sweep must not end its service."""
    started = start_service("still-running", SLEEPER, configuration=root)
    try:
        swept = chaosmem(
            "rollback",
            "--state-dir",
            root["chaosmem_state_dir"],
            "--sweep",
            "--cgroup-root",
            str(cgroup.path),
            "--dry-run",
        )
        assert "its run is still going" in swept.stdout
        assert alive(started["pid"])
    finally:
        stop_service("still-running", configuration=root)


def test_a_service_entry_outside_chaosmem_cgroups_is_refused(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """A hand-written ledger line naming any cgroup must not make rollback end its processes."""
    process = cgroup.spawn(SLEEPER)
    try:
        directory = Path(state["chaosmem_state_dir"])
        directory.mkdir(mode=0o700, exist_ok=True)
        line = {
            "op": "open",
            "id": "forged",
            "kind": "service",
            "target": {"type": "service", "name": "x", "path": str(cgroup.path)},
            "undo": {"path": str(cgroup.path), "argv": [], "env_keys": []},
            "run": None,
            "at": time.time(),
            "pid": 1,
        }
        (directory / "ledger.jsonl").write_text(json.dumps(line) + "\n")
        result = chaosmem("rollback", "--state-dir", str(directory))
        assert result.returncode == 1
        assert "not one chaosmem creates" in result.stdout
        assert process.poll() is None and cgroup.exists()
    finally:
        process.kill()
        process.wait()


def test_a_ledger_that_is_a_directory_is_a_clear_error(state: dict[str, Any]) -> None:
    directory = state_dir(state)
    (directory / "ledger.jsonl").mkdir()
    result = chaosmem("rollback", "--state-dir", str(directory))
    assert result.returncode == 2
    assert "is a directory, not a ledger file" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ChaosmemError, match="is a directory"):
        Ledger(directory).record(kind="service", target={}, undo={})


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)
_FIELDS = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["open", "close", "other"]),
        "id": st.one_of(st.text(max_size=6), _JSON_SCALARS),
        "kind": st.one_of(st.sampled_from(["service", "stressor"]), _JSON_SCALARS),
        "target": st.one_of(st.dictionaries(st.text(max_size=3), _JSON_SCALARS), _JSON_SCALARS),
        "undo": st.one_of(st.dictionaries(st.text(max_size=3), _JSON_SCALARS), _JSON_SCALARS),
        "at": _JSON_SCALARS,
        "pid": _JSON_SCALARS,
        "outcome": _JSON_SCALARS,
    }
)


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, allow_nan=True)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            _FIELDS.map(_json_line),
            st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n),  # deep nesting
            st.integers(1, 100_000).map(lambda n: '{"op": "open", "x": ' + "[" * n),
            st.just('{"op": "open", "pid": 1e400, "at": Infinity}'),
            st.text(max_size=40),
        ),
        max_size=8,
    )
)
def test_ledger_fuzz_never_raises_and_keeps_only_sound_entries(lines: list[str]) -> None:
    read = parse_ledger("\n".join(lines))
    for entry in read.entries:
        assert isinstance(entry.id, str) and isinstance(entry.target, dict)
        assert isinstance(entry.pid, int) and entry.pid > 0
        assert entry.at == entry.at and abs(entry.at) < 1e11  # finite, bounded
    nonblank = sum(1 for chunk in "\n".join(lines).splitlines() if chunk.strip())
    assert len(read.torn) <= nonblank


# -- 9.5: the state dir is ours -----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
def test_a_state_dir_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(InvalidArgument, match="chmod go-w") as info:
        state_dir({"chaosmem_state_dir": str(directory)})
    assert info.value.name == "chaosmem_state_dir"
    result = chaosmem("rollback", "--state-dir", str(directory))
    assert result.returncode == 2 and "chmod go-w" in result.stderr


def test_a_ledger_symlinked_into_a_world_writable_state_dir_is_refused(tmp_path: Path) -> None:
    """The issue's check: a planted ledger symlink in a dir anyone can write."""
    directory = tmp_path / "world"
    directory.mkdir()
    directory.chmod(0o777)
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    (directory / "ledger.jsonl").symlink_to(target)
    result = chaosmem("rollback", "--state-dir", str(directory))
    assert result.returncode == 2 and "chmod go-w" in result.stderr
    directory.chmod(0o700)  # even in a private dir, the link itself is refused
    with pytest.raises(ChaosmemError, match="is a symlink"):
        Ledger(directory).record(kind="service", target={}, undo={})
    assert target.read_text() == ""


def test_a_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    with pytest.raises(InvalidArgument, match="owned by uid 65534"):
        state_dir({"chaosmem_state_dir": str(directory)})


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_files_are_0600_in_0700_folders(root: dict[str, Any], tmp_path: Path) -> None:
    """Service logs, timeline.jsonl and replays/latest were 0644 in 0755 folders."""
    os.umask(0o022)  # the usual umask: the modes must not depend on it
    directory = Path(root["chaosmem_state_dir"])
    started = start_service("modes", SLEEPER, configuration=root)
    try:
        for path in (Path(started["log"]), Path(started["pidfile"])):
            assert _mode(path) == 0o600, path
            assert _mode(path.parent) == 0o700
    finally:
        stop_service("modes", configuration=root)
    recorder = Recorder(
        directory=directory / "runs" / "r1", interval=1.0, targets=[], configuration=root
    )
    recorder.start()
    recorder.stop()
    assert _mode(recorder.path) == 0o600
    assert _mode(directory / "runs") == 0o700 and _mode(directory / "runs" / "r1") == 0o700
    set_latest(directory, "20250101T000000Z-abcdef")
    assert _mode(directory / "replays") == 0o700
    assert _mode(directory / "replays" / "latest") == 0o600
    summary = directory / "replays" / "x.json"
    write_json_atomic(summary, {"a": 1})
    assert _mode(summary) == 0o600


def test_state_files_are_not_written_through_symlinks(
    state: dict[str, Any], tmp_path: Path
) -> None:
    directory = state_dir(state)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (directory / "replays").mkdir(mode=0o700)
    link = directory / "replays" / "x.json"
    link.symlink_to(victim)
    write_json_atomic(link, {"a": 1})  # replaces the link itself, never writes through it
    assert victim.read_text() == "keep"
    assert not link.is_symlink()


@pytest.mark.parametrize("bad", ["../../x", "..", "a/b", "/etc", "", ".hidden", "x" * 200])
def test_replay_ids_that_are_not_names_are_refused(state: dict[str, Any], bad: str) -> None:
    """Before: replay_summary(replay_id="../../x") read STATE/replays/../../x/summary.json."""
    outside = Path(state["chaosmem_state_dir"]).parent / "x"
    outside.mkdir(exist_ok=True)
    (outside / "summary.json").write_text(json.dumps({"status": {"200": 1}}))
    for probe in (replay_summary, status_ratio):
        with pytest.raises(InvalidArgument) as info:
            probe(replay_id=bad, configuration=state)
        assert info.value.name == "replay_id"


def test_a_forged_replay_pointer_is_refused(state: dict[str, Any]) -> None:
    """The run's replay pointer names a directory: a forged one must not lead outside."""
    from chaosmem.ledger import set_current_run

    directory = state_dir(state)
    (directory / "runs" / "r1").mkdir(parents=True, mode=0o700)
    (directory / "runs" / "r1" / "replay").write_text("../../x\n")
    set_current_run("r1")
    try:
        with pytest.raises(InvalidArgument, match="runs/r1/replay"):
            replay_summary(configuration=state)
    finally:
        set_current_run(None)


def test_sweep_ends_a_detached_stressor_the_ledger_lost(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """A stressor leaves its status file (and its --id on its command line): found without the
    ledger once its owner is gone."""
    from chaosmem.stress.actions import inject_allocation_stress

    started = inject_allocation_stress(
        {"type": "cgroup", "path": str(cgroup.path)},
        size="8Mi",
        hold="120s",
        detach=True,
        configuration=state,
    )
    [pid] = started["pids"]
    directory = Path(state["chaosmem_state_dir"])
    assert alive(pid)
    (directory / "ledger.jsonl").write_text("garbage\n")  # the ledger is lost
    swept = chaosmem(
        "rollback", "--state-dir", str(directory), "--sweep", "--cgroup-root", str(cgroup.path)
    )
    assert swept.returncode == 1  # the unreadable line is still reported
    assert f"ended pids [{pid}]" in swept.stdout
    deadline = time.monotonic() + 120  # a hang guard, not a speed figure
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "hung: the ended process is still alive"


def test_a_planted_summary_symlink_is_not_read(state: dict[str, Any], tmp_path: Path) -> None:
    """A link in the state dir must not make a probe read (and a journal show) another file."""
    directory = state_dir(state)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"state": "done", "status": {"200": 1}, "token": "s3cr3t"}))
    replay = directory / "replays" / "20250101T000000Z-abcdef"
    replay.mkdir(parents=True, mode=0o700)
    (replay / "summary.json").symlink_to(secret)
    set_latest(directory, replay.name)
    with pytest.raises(ChaosmemError, match="is a symlink"):
        replay_summary(configuration=state)


def test_a_service_limit_the_kernel_cannot_hold_is_refused(root: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as info:
        start_service("huge", SLEEPER, memory_limit="4Ei", configuration=root)
    assert info.value.name == "memory_limit"
    assert Ledger(Path(root["chaosmem_state_dir"])).read().open() == []
