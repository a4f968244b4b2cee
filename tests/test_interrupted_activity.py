"""Real `chaos run`: SIGTERM or SIGINT during (and after) a blocking chaosmem activity.

A foreground replay or a ``wait: true`` stressor stops at once, the run ends ``interrupted``
(so ``chaosmem gate`` fails it), the activities after it do not run, and the control restores
the tightened limit. After a foreground replay, Chaos Toolkit's own SIGTERM handler is back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaosmem.interrupts import take_interrupts
from chaosmem.ledger import Ledger
from chaosmem.lifecycle import cmdline
from chaosmem.targets.cgroup import Cgroup
from chaosmem.traffic.options import parse_options
from chaosmem.traffic.replay import run_replay
from tests.conftest import REPO
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer, refused_url

CHAOS = str(Path(sys.executable).parent / "chaos")
CHAOSMEM = str(Path(sys.executable).parent / "chaosmem")
CONTROL = {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}


def _action(title: str, module: str, func: str, **arguments: Any) -> dict[str, Any]:
    return {
        "type": "action",
        "name": title,
        "provider": {"type": "python", "module": module, "func": func, "arguments": arguments},
    }


def _experiment(tmp_path: Path, group: Cgroup, blocking: dict[str, Any]) -> Path:
    experiment = {
        "title": "a blocking activity under a tight limit",
        "description": "the test interrupts it",
        "configuration": {"chaosmem_target": {"type": "cgroup", "path": str(group.path)}},
        "controls": [CONTROL],
        "method": [
            _action("tighten", "chaosmem.limits.actions", "tighten_memory_limit", limit="64Mi"),
            blocking,
            _action("never", "os", "mkdir", path=str(tmp_path / "never-reached")),
        ],
        "rollbacks": [],
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    return path


def _start(experiment: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHAOSMEM_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(tmp_path / "journal.json"),
         str(experiment)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120  # a hang guard, not a speed figure
    while not ready():
        assert proc.poll() is None, proc.communicate()[0].decode()
        assert time.monotonic() < deadline, f"hung: never {what}"
        time.sleep(0.05)


def _activity_started(state: Path, name: str) -> bool:
    """Whether the run's timeline marks ``name`` as started (the control writes it first)."""
    for path in state.glob("runs/*/timeline.jsonl"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line being written
                record = json.loads(line)
                if record.get("event") == "activity-start" and record.get("name") == name:
                    return True
    return False


def _summaries(state: Path) -> list[dict[str, Any]]:
    found = []
    for path in (state / "replays").glob("*/summary.json"):
        with contextlib.suppress(ValueError):  # being replaced
            found.append(json.loads(path.read_text()))
    return found


def _check_interrupted(
    proc: subprocess.Popen[bytes], tmp_path: Path, group: Cgroup, sig: signal.Signals
) -> tuple[dict[str, Any], str]:
    sent = time.monotonic()
    proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0].decode()
    took = time.monotonic() - sent
    assert proc.returncode != -sig, f"chaos run died of {sig.name}: {output}"
    assert group.memory_limit() == 256 << 20, output  # restored by the control
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "interrupted", output
    assert [r["activity"]["name"] for r in journal["run"]][-1] != "never", output
    assert not (tmp_path / "never-reached").exists(), output
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    assert "cgroup-limit" in [r["kind"] for r in extension["restored"]], output
    assert not Ledger(tmp_path / "state").read().open(), output
    gate = subprocess.run(
        [CHAOSMEM, "gate", str(tmp_path / "journal.json")], capture_output=True, text=True
    )
    assert gate.returncode != 0, gate.stdout
    print(f"{sig.name}: chaos run ended {took:.2f}s after the signal")
    return extension, output


@pytest.mark.parametrize(
    ("sig", "times"), [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)]
)
def test_signal_during_a_foreground_replay_interrupts_the_run(
    tmp_path: Path, cgroup: Cgroup, sig: signal.Signals, times: int
) -> None:
    cgroup.set_memory_limit(256 << 20)
    capture = write_timed_gor(tmp_path / "two.gor", count=2, span_s=0.2)
    with RecordingServer() as server:
        replay = _action(
            "replay", "chaosmem.traffic.actions", "replay_traffic", capture=str(capture),
            target_url=server.url, loop=True, duration="60s",
        )  # fmt: skip
        proc = _start(_experiment(tmp_path, cgroup, replay), tmp_path)
        _wait("requests arrive", lambda: len(server.arrived) > 2, proc)
        assert cgroup.memory_limit() == 64 << 20
        if times == 2:  # an impatient operator: the second one is handed on at once
            proc.send_signal(sig)
        extension, output = _check_interrupted(proc, tmp_path, cgroup, sig)
    (summary,) = _summaries(tmp_path / "state")
    # stopped on the signal (the end of its 60 s would say "done"), its summary final: an end
    # time, and what was in flight accounted for
    assert summary["state"] == "stopped", summary
    assert summary["ended_at"] is not None and summary["in_flight"] == 0, summary
    assert summary["sent"] == summary["completed"] + summary["no_status"], summary
    assert extension["interrupted"]["signal"] == sig.name, output


def test_sigterm_after_a_foreground_replay_reaches_chaos_toolkit(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    cgroup.set_memory_limit(256 << 20)
    capture = write_timed_gor(tmp_path / "two.gor", count=2, span_s=0.2)
    with RecordingServer() as server:
        replay = _action(
            "replay", "chaosmem.traffic.actions", "replay_traffic", capture=str(capture),
            target_url=server.url,
        )  # fmt: skip
        replay["pauses"] = {"after": 60}
        proc = _start(_experiment(tmp_path, cgroup, replay), tmp_path)
        state = tmp_path / "state"
        _wait(
            "the replay ends",
            lambda: any(s["state"] != "running" for s in _summaries(state)),
            proc,
        )
        time.sleep(0.5)  # into the pause
        _check_interrupted(proc, tmp_path, cgroup, signal.SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_waiting_stressor_interrupts_the_run(
    tmp_path: Path, cgroup: Cgroup, sig: signal.Signals
) -> None:
    cgroup.set_memory_limit(256 << 20)
    stress = _action(
        "stress", "chaosmem.stress.actions", "inject_allocation_stress", size="8Mi", hold="60s",
        wait=True,
    )  # fmt: skip
    proc = _start(_experiment(tmp_path, cgroup, stress), tmp_path)
    state = tmp_path / "state"

    def holding() -> bool:
        for path in (state / "stress").glob("*.json"):
            try:
                if json.loads(path.read_text()).get("phase") == "hold":
                    return True
            except ValueError:
                pass
        return False

    _wait("the stressor holds", holding, proc)
    extension, output = _check_interrupted(proc, tmp_path, cgroup, sig)
    assert cgroup.pids() == [], output
    assert extension["interrupted"]["signal"] == sig.name, output


def test_run_replay_hands_the_signal_on_and_puts_the_handler_back(tmp_path: Path) -> None:
    """In this process: the replay stops, the owner's handler gets the signal once, after it."""
    seen: list[tuple[int, str]] = []
    state = tmp_path / "state"

    def owner(signum: int, _frame: object) -> None:
        seen.append((signum, _summaries(state)[0]["state"]))

    previous = signal.signal(signal.SIGTERM, owner)
    take_interrupts()
    try:
        capture = write_timed_gor(tmp_path / "two.gor", count=2, span_s=0.2)
        with RecordingServer() as server:
            options = parse_options(  # one engine in this process: run_engine's handlers
                capture=str(capture), target_url=server.url, loop=True, duration="60s", workers=1
            )
            summary = run_replay(
                options, state=state, on_start=lambda _r: os.kill(os.getpid(), signal.SIGTERM)
            )
        assert summary["state"] == "stopped" and summary["ended_at"] is not None  # on the signal
        assert summary["in_flight"] == 0, summary
        assert seen == [(signal.SIGTERM, "stopped")]  # handed on once the replay had stopped
        assert signal.getsignal(signal.SIGTERM) is owner
        assert [(i.signal, i.work) for i in take_interrupts()] == [("SIGTERM", "replay_traffic")]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigint_stops_run_replay_then_raises_keyboard_interrupt(tmp_path: Path) -> None:
    state = tmp_path / "state"
    capture = write_timed_gor(tmp_path / "two.gor", count=2, span_s=0.2)
    take_interrupts()
    with RecordingServer() as server:
        options = parse_options(  # one engine in this process: run_engine's handlers
            capture=str(capture), target_url=server.url, loop=True, duration="60s", workers=1
        )
        with pytest.raises(KeyboardInterrupt):
            run_replay(
                options, state=state, on_start=lambda _r: os.kill(os.getpid(), signal.SIGINT)
            )
    (summary,) = _summaries(state)
    assert summary["state"] == "stopped"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert [i.signal for i in take_interrupts()] == ["SIGINT"]


STUBBORN_SERVICE = (
    f'{sys.executable} -c "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
    'time.sleep(120)"'
)


def test_a_second_sigterm_during_the_restore_does_not_cut_it_short(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    """The service ignores SIGTERM, so its undo takes the 5 s grace: the second SIGTERM lands
    in the middle of the control's restore, which still ends every change of the run."""
    cgroup.set_memory_limit(256 << 20)
    experiment = json.loads(
        _experiment(
            tmp_path,
            cgroup,
            _action("pause", "os.path", "exists", path="/") | {"pauses": {"after": 60}},
        ).read_text()
    )
    experiment["controls"][0]["provider"]["arguments"] = {
        "services": [{"name": "stubborn", "command": STUBBORN_SERVICE}]
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    proc = _start(path, tmp_path)
    try:
        _wait("the limit is tight", lambda: cgroup.memory_limit() == 64 << 20, proc)
        proc.send_signal(signal.SIGTERM)
        _wait("the control restores the limit", lambda: cgroup.memory_limit() == 256 << 20, proc)
        time.sleep(0.5)  # now in the service's grace period
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:  # whatever happened, leave no service behind
        proc.kill()
        proc.wait()
        subprocess.run([CHAOSMEM, "rollback", "--state-dir", str(tmp_path / "state")], check=False)
        leftover = Cgroup.of_process("self").path / "chaosmem-stubborn"
        if leftover.is_dir():
            Cgroup.at(leftover).remove(grace=0)
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert journal["status"] == "interrupted", output
    extension = next(e for e in journal["extensions"] if e["name"] == "chaosmem")
    assert sorted(r["kind"] for r in extension["restored"]) == ["cgroup-limit", "service"], output
    assert all(r["error"] is None for r in extension["restored"]), output
    assert not Ledger(tmp_path / "state").read().open(), output
    service = next(r for r in extension["restored"] if r["kind"] == "service")
    assert not Path(service["target"]["path"]).exists(), output


def test_sigterm_while_a_probe_waits_for_a_replay_interrupts_the_run(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    cgroup.set_memory_limit(256 << 20)
    capture = write_timed_gor(tmp_path / "two.gor", count=2, span_s=0.2)
    with RecordingServer() as server:
        experiment = json.loads(
            _experiment(
                tmp_path,
                cgroup,
                {
                    "type": "probe", "name": "wait-for-the-replay",
                    "provider": {
                        "type": "python", "module": "chaosmem.traffic.probes",
                        "func": "replay_summary", "arguments": {"wait": "60s"},
                    },
                },
            ).read_text()
        )  # fmt: skip
        background = _action(
            "replay", "chaosmem.traffic.actions", "replay_traffic", capture=str(capture),
            target_url=server.url, loop=True, duration="60s", wait=False,
        )  # fmt: skip
        experiment["method"].insert(1, background)
        path = tmp_path / "experiment.json"
        path.write_text(json.dumps(experiment))
        proc = _start(path, tmp_path)
        _wait("requests arrive", lambda: len(server.arrived) > 2, proc)
        # NB: not a sleep: on a loaded machine the run may not have reached the probe yet
        _wait(
            "the probe starts waiting",
            lambda: _activity_started(tmp_path / "state", "wait-for-the-replay"),
            proc,
        )
        extension, output = _check_interrupted(proc, tmp_path, cgroup, signal.SIGTERM)
    assert extension["interrupted"]["activity"] == "wait-for-the-replay", output
    assert "replay" in [r["kind"] for r in extension["restored"]], output  # the control stopped it


def test_sigterm_while_start_service_waits_for_ready_interrupts_the_run(
    tmp_path: Path, cgroup: Cgroup
) -> None:
    cgroup.set_memory_limit(256 << 20)
    never = refused_url()  # nothing ever answers there
    start = _action(
        "start-a-service-that-never-answers", "chaosmem.local.actions", "start_service",
        name="silent", command="sleep 120", ready_url=never + "/healthz", ready_timeout="60s",
    )  # fmt: skip
    proc = _start(_experiment(tmp_path, cgroup, start), tmp_path)
    silent = Cgroup.of_process("self").path / "chaosmem-silent"
    try:
        _wait("the service runs", lambda: (silent / "cgroup.procs").exists() and bool(
            (silent / "cgroup.procs").read_text().strip()), proc)  # fmt: skip
        time.sleep(0.3)  # into the readiness wait
        extension, output = _check_interrupted(proc, tmp_path, cgroup, signal.SIGTERM)
        assert extension["interrupted"]["activity"] == "start-a-service-that-never-answers"
        assert not silent.exists(), output  # the service was ended and its cgroup removed
    finally:
        proc.kill()
        proc.wait()
        if silent.is_dir():
            Cgroup.at(silent).remove(grace=0)


def _worker_pids(state: Path) -> list[int]:
    """The pids of a sharded replay's workers, once each has sent something."""
    pids = []
    for path in sorted(state.glob("replays/*/shards/*/summary.json")):
        with contextlib.suppress(ValueError):  # being replaced
            part = json.loads(path.read_text())
            if part.get("sent", 0) > 0:
                pids.append(int(part["pid"]))
    return pids


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_sharded_foreground_replay_interrupts_the_run(
    tmp_path: Path, cgroup: Cgroup, sig: signal.Signals
) -> None:
    cgroup.set_memory_limit(256 << 20)
    capture = write_timed_gor(tmp_path / "t.gor", count=100, span_s=1.0)
    state = tmp_path / "state"
    with RecordingServer() as server:
        replay = _action(
            "replay", "chaosmem.traffic.actions", "replay_traffic", capture=str(capture),
            target_url=server.url, loop=True, duration="60s", workers=2,
        )  # fmt: skip
        proc = _start(_experiment(tmp_path, cgroup, replay), tmp_path)
        try:
            _wait("both workers send", lambda: len(_worker_pids(state)) == 2, proc)
            pids = _worker_pids(state)
            assert cgroup.memory_limit() == 64 << 20
            extension, output = _check_interrupted(proc, tmp_path, cgroup, sig)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not [pid for pid in pids if _running(pid)], output  # no worker outlives the run
    (summary,) = _summaries(state)
    assert summary["workers"] == 2, summary
    assert summary["state"] == "stopped", summary  # the merged one, written before the end
    assert summary["ended_at"] is not None and summary["in_flight"] == 0, summary
    assert extension["interrupted"]["signal"] == sig.name, output
    if sig == signal.SIGTERM:  # handed on to Chaos Toolkit's own handler, after the stop
        journal = json.loads((tmp_path / "journal.json").read_text())
        (record,) = [r for r in journal["run"] if r["activity"]["name"] == "replay"]
        assert "InterruptExecution" in "".join(record.get("exception", [])), record


def _sharded_options(capture: Path, url: str) -> Any:
    return parse_options(capture=str(capture), target_url=url, loop=True, duration="60s", workers=2)


def test_a_sharded_replay_hands_the_signal_on_and_puts_the_handlers_back(tmp_path: Path) -> None:
    """In this process, with workers: the replay stops, the owner gets the signal once, after
    the merged summary says stopped; every worker has ended; both handlers are the owner's."""
    seen: list[tuple[int, str]] = []
    state = tmp_path / "state"

    def owner(signum: int, _frame: object) -> None:
        merged = [s for s in _summaries(state) if s.get("workers") == 2]
        seen.append((signum, merged[0]["state"] if merged else "none"))

    def interrupt_when_sending() -> None:
        deadline = time.monotonic() + 60
        while len(_worker_pids(state)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, owner)
    before_int = signal.getsignal(signal.SIGINT)
    take_interrupts()
    try:
        capture = write_timed_gor(tmp_path / "t.gor", count=100, span_s=1.0)
        with RecordingServer() as server:
            sender = threading.Thread(target=interrupt_when_sending, daemon=True)
            sender.start()
            summary = run_replay(_sharded_options(capture, server.url), state=state)
            sender.join(5)
        pids = _worker_pids(state)
        assert summary["workers"] == 2 and len(pids) == 2
        assert summary["state"] == "stopped" and summary["ended_at"] is not None  # on the signal
        assert summary["in_flight"] == 0, summary
        assert seen == [(signal.SIGTERM, "stopped")]  # handed on once the replay had stopped
        assert not [pid for pid in pids if _running(pid)]
        assert signal.getsignal(signal.SIGTERM) is owner
        assert signal.getsignal(signal.SIGINT) is before_int
        assert [(i.signal, i.work) for i in take_interrupts()] == [("SIGTERM", "replay_traffic")]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sharded_replay_that_ends_puts_the_handlers_back(tmp_path: Path) -> None:
    def owner(_signum: int, _frame: object) -> None:
        raise AssertionError("no signal was sent")

    previous_term = signal.signal(signal.SIGTERM, owner)
    previous_int = signal.signal(signal.SIGINT, owner)
    try:
        capture = write_timed_gor(tmp_path / "t.gor", count=20, span_s=0.2)
        with RecordingServer() as server:
            options = parse_options(capture=str(capture), target_url=server.url, workers=2)
            summary = run_replay(options, state=tmp_path / "state")
        assert summary["workers"] == 2 and summary["state"] == "done", summary
        assert summary["completed"] == 20
        assert signal.getsignal(signal.SIGTERM) is owner
        assert signal.getsignal(signal.SIGINT) is owner
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def _processes_running(marker: str) -> list[int]:
    """Pids whose command line names ``marker`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and any(marker in arg for arg in cmdline(int(entry.name))):
            found.append(int(entry.name))
    return found


def test_a_signal_while_the_workers_start_stops_the_replay_before_it_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers that take 3 s to start (a real ``sitecustomize`` on their path sleeps): a SIGTERM
    meanwhile ends them before any start time is handed out; nothing is sent, the merged
    summary says stopped, and the signal still reaches its owner."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text("import time\ntime.sleep(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(slow))
    state = tmp_path / "state"
    seen: list[int] = []
    found: list[int] = []

    def interrupt_while_starting() -> None:
        deadline = time.monotonic() + 30
        while len(found) < 2 and time.monotonic() < deadline:
            found[:] = _processes_running(str(state / "replays"))
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    take_interrupts()
    try:
        capture = write_timed_gor(tmp_path / "t.gor", count=100, span_s=1.0)
        with RecordingServer() as server:
            sender = threading.Thread(target=interrupt_while_starting, daemon=True)
            sender.start()
            summary = run_replay(_sharded_options(capture, server.url), state=state)
            sender.join(5)
            arrived = len(server.arrived)
        assert len(found) == 2, "the workers were not seen starting"
        assert summary["state"] == "stopped" and summary["sent"] == 0 == arrived, summary
        assert not [pid for pid in found if _running(pid)]
        assert seen == [signal.SIGTERM]
        assert [i.work for i in take_interrupts()] == ["replay_traffic"]
    finally:
        signal.signal(signal.SIGTERM, previous)
