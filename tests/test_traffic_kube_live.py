"""A replay in pods, live: the pods' logs are followed while the Job runs (issue 14.3, live).

The real ``kubernetes`` client speaks HTTP to the API double, whose kubelet runs each pod's
command for real against a loopback server and serves ``follow=true`` logs as a chunked
stream. While the Job runs, the replay's merged ``seconds.jsonl`` and ``summary.json`` (what
the probes and the timeline read) grow with the pods' traffic; at the end they hold exactly
what the server received, also when every stream is cut mid-way and must be resumed. A
background replay in pods (``wait: false``) is a worker process on the ledger, stopped by
rollback, ``stop_traffic_replay`` or a SIGTERM to ``chaos run``: the Job and its Secret are
deleted, the pods print their last lines on SIGTERM, and those are merged into a final summary.
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
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.errors import ChaosmemError
from chaosmem.kube.client import connect
from chaosmem.ledger import Ledger
from chaosmem.lifecycle import cmdline
from chaosmem.rollback import rollback
from chaosmem.traffic.actions import replay_traffic, stop_traffic_replay
from chaosmem.traffic.kubejob import LEDGER_KIND as JOB_KIND
from chaosmem.traffic.pod import LOG_SECOND, LOG_SUMMARY
from chaosmem.traffic.podlogs import MAX_LINE, PodFollower, parse_line
from chaosmem.traffic.probes import replay_summary, status_ratio
from chaosmem.traffic.results import SecondsTally, merge_seconds, read_seconds, read_summary
from tests.kube_double import make_pod
from tests.kube_jobs import JobDouble, kube_jobs  # noqa: F401
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer

REPO = Path(__file__).resolve().parent.parent
CHAOS = str(Path(sys.executable).parent / "chaos")
#: A hang guard, not a speed figure.
HANG = 120
SCALE = {"namespace": "shop", "image": "registry.example/chaosmem:0.1", "capture_pvc": "captures"}
TOKEN = "Bearer l1ve-t0ken"


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"chaosmem_state_dir": str(tmp_path / "state")}


@pytest.fixture
def capture(tmp_path: Path, kube_jobs: JobDouble) -> Path:  # noqa: F811
    """40 requests a second of recorded time, in the PVC ``captures``."""
    volume = tmp_path / "pvc"
    volume.mkdir()
    kube_jobs.volumes["captures"] = volume
    return write_timed_gor(volume / "t.gor", count=40, span_s=1.0)


def _every_fourth_503(index: int) -> int:
    return 503 if index % 4 == 0 else 200


@pytest.mark.parametrize("cut", [None, 1.5], ids=["one-stream-per-pod", "streams-cut-every-1.5s"])
def test_pod_figures_merge_live_while_the_job_runs(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
    capture: Path,
    cut: float | None,
) -> None:
    kube_jobs.cut_follow_after = cut
    state = Path(config["chaosmem_state_dir"])
    result: dict[str, Any] = {}
    failure: list[BaseException] = []

    def replay() -> None:
        try:
            summary = replay_traffic(
                capture=capture.name, target_url=server.url, loop=True, duration="6s",
                scale={**SCALE, "pods": 2, "start_delay": "3s"}, configuration=config,
            )  # fmt: skip
            result.update(summary)
        except BaseException as exc:
            failure.append(exc)

    # (merged completed, merged seconds, 503 ratio, what the server had seen, latency p50) while
    # running
    samples: list[tuple[int, int, float, int, float | None]] = []
    with RecordingServer(status_for=_every_fourth_503) as server:
        thread = threading.Thread(target=replay)
        thread.start()
        deadline = time.monotonic() + HANG
        while thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                live = replay_summary(configuration=config)  # the probe, as an experiment asks
            except ChaosmemError:
                continue  # the replay has no summary yet
            if live["state"] != "running" or not live["completed"] or not kube_jobs.jobs:
                continue
            ratio = status_ratio(503, configuration=config)
            samples.append(
                (
                    live["completed"],
                    len(read_seconds(state, live["replay_id"])),
                    ratio,
                    len(server.arrived),
                    live["latency_ms"]["p50"],
                )
            )
        thread.join(HANG)
        assert not thread.is_alive(), f"hung: the replay in pods did not end in {HANG} s"
        arrived = server.arrived
    assert not failure, failure
    # while the Job ran, the probes saw its pods' traffic, growing, never ahead of the server
    counts = [s[0] for s in samples]
    assert len(set(counts)) >= 3, samples
    assert counts == sorted(counts)
    assert all(completed <= seen for completed, _, _, seen, _ in samples), samples
    # latency percentiles too, from the pods' per-second latency buckets
    assert all(p50 is not None and p50 > 0 for *_, p50 in samples), samples
    assert len({s[1] for s in samples}) >= 3, samples  # seconds.jsonl grew while it ran
    # the 503 share so far: one in four overall, though the first second's few answers may hold
    # none of them (seen under load), so only "some" is asked of the early samples
    assert all(0 <= s[2] < 1 for s in samples) and any(s[2] > 0 for s in samples), samples
    # at the end: exactly what the server received, second by second and in the summary
    summary = result
    assert summary["state"] == "done", summary.get("error")
    seconds = read_seconds(state, summary["replay_id"])
    answered_503 = sum(1 for n in range(len(arrived)) if _every_fourth_503(n) == 503)
    assert summary["completed"] == summary["sent"] == len(arrived) > 100
    assert sum(line["completed"] for line in seconds) == len(arrived)
    assert sum(line["status"].get("503", 0) for line in seconds) == answered_503
    assert summary["status"]["503"] == answered_503
    assert not any(line.get("lost") for line in seconds)
    assert "lost_seconds" not in summary
    elapsed = [line["elapsed"] for line in seconds]
    assert elapsed == sorted(elapsed) and len(seconds) >= 6
    assert not kube_jobs.jobs
    followed = [pod for _, pod in kube_jobs.follows]
    assert len(set(followed)) == 2
    if cut is not None:  # every stream was cut: each pod's log was resumed, nothing twice
        assert all(followed.count(pod) >= 3 for pod in set(followed)), followed


def _wait_live(
    config: dict[str, Any],
    server: RecordingServer,
    *,
    completed: int,
    replay_id: str | None = None,
) -> None:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        live = replay_summary(replay_id=replay_id, configuration=config)
        if live["completed"] >= completed and len(server.arrived) >= completed:
            assert live["state"] == "running", live
            return
        time.sleep(0.2)
    raise AssertionError(f"hung: the pods' traffic was not merged live within {HANG} s")


def _alive(pid: int) -> bool:
    return bool(cmdline(pid))


def _check_stopped(
    state: Path,
    rid: str,
    arrived: int,
    double: JobDouble,
    worker: int | None,
) -> dict[str, Any]:
    """Job and Secret gone, pods ended by SIGTERM gracefully, the merged summary final."""
    summary = read_summary(state, rid)
    assert summary["state"] == "stopped", summary
    # what was answered is what the server answered (a cancelled one may have arrived too)
    completed, cancelled = summary["completed"], summary["errors"]["cancelled"]
    assert 0 < completed <= arrived <= completed + cancelled, (summary, arrived)
    # each pod printed its last summary after the SIGTERM its deletion sent, and it was merged
    for shard in sorted((state / "replays" / rid / "shards").iterdir()):
        own = json.loads((shard / "summary.json").read_text())
        assert own["state"] == "stopped" and own["pid"] > 0, own
    assert not double.jobs and not double.secrets
    double.wait_pods(HANG)
    assert [p.returncode for p in double.processes.values()] == [0, 0]
    if worker is not None:
        assert not _alive(worker)
    ledger = Ledger(state).read()
    assert not ledger.open(), ledger.open()
    kinds = [e.kind for e in ledger.entries]
    if "replay" in kinds:  # the Job's entry was written before the worker's
        assert kinds.index(JOB_KIND) < kinds.index("replay")
    return summary


@pytest.mark.parametrize("how", ["rollback", "stop_traffic_replay"])
def test_a_background_replay_in_pods_stops_as_one(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
    capture: Path,
    how: str,
) -> None:
    state = Path(config["chaosmem_state_dir"])
    with RecordingServer() as server:
        started = replay_traffic(
            capture=capture.name, target_url=server.url, loop=True, duration="10m",
            headers={"Authorization": TOKEN}, wait=False,
            scale={**SCALE, "pods": 2, "start_delay": "2s"}, configuration=config,
        )  # fmt: skip
        try:
            # it returned once the Job and its Secret existed, created by the worker process
            assert started["state"] == "running" and started["pid"] != os.getpid()
            assert kube_jobs.jobs and kube_jobs.secrets
            assert started["job"]["name"] in {name for _, name in kube_jobs.jobs}
            open_kinds = {e.kind for e in Ledger(state).read().open()}
            assert open_kinds == {"replay", JOB_KIND}
            _wait_live(config, server, completed=40)
            if how == "rollback":
                steps = rollback(state)
                assert [s.entry.kind for s in steps] == ["replay", JOB_KIND]
                assert all(s.ok for s in steps), steps
            else:
                result = stop_traffic_replay(configuration=config)
                assert result["summaries"][started["replay_id"]]["state"] == "stopped"
        finally:
            rollback(state)  # NB: whatever failed above, nothing is left running
        arrived = len(server.arrived)
    _check_stopped(state, started["replay_id"], arrived, kube_jobs, started["pid"])
    # the worker deleted the Job itself, once (the rollback then found it gone)
    deletes = [r for r in kube_jobs.requests if r.method == "DELETE" and "/jobs/" in r.path]
    assert len(deletes) >= 1
    assert TOKEN not in (state / "replays" / started["replay_id"] / "spec.json").read_text()


def test_a_background_replay_whose_job_cannot_be_created_fails_the_activity(
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
    capture: Path,
) -> None:
    state = Path(config["chaosmem_state_dir"])
    with pytest.raises(ChaosmemError, match="nowhere"):
        replay_traffic(
            capture=capture.name, target_url="http://127.0.0.1:9", wait=False,
            scale={**SCALE, "namespace": "nowhere", "pods": 2}, configuration=config,
        )  # fmt: skip
    ledger = Ledger(state).read()
    assert not ledger.open() and {e.kind for e in ledger.entries} == {"replay", JOB_KIND}
    assert not kube_jobs.jobs and not kube_jobs.processes
    (pidfile,) = state.glob("replays/*/worker.pid")
    assert not _alive(int(pidfile.read_text()))


@pytest.mark.parametrize("wait", [True, False], ids=["foreground", "background"])
def test_sigterm_to_chaos_run_stops_a_replay_in_pods(
    tmp_path: Path,
    kube_jobs: JobDouble,  # noqa: F811
    capture: Path,
    wait: bool,
) -> None:
    state = tmp_path / "state"
    with RecordingServer() as server:
        replay = {
            "type": "action",
            "name": "replay-in-pods",
            "provider": {
                "type": "python", "module": "chaosmem.traffic.actions", "func": "replay_traffic",
                "arguments": {
                    "capture": capture.name, "target_url": server.url, "loop": True,
                    "duration": "10m", "headers": {"Authorization": TOKEN}, "wait": wait,
                    "scale": {**SCALE, "pods": 2, "start_delay": "2s"},
                },
            },
        }  # fmt: skip
        hold = {  # waits for the background replay to end: the signal comes meanwhile
            "type": "probe",
            "name": "hold",
            "provider": {"type": "python", "module": "chaosmem.traffic.probes",
                         "func": "replay_summary", "arguments": {"wait": "5m"}},
        }  # fmt: skip
        experiment = {
            "title": "a replay in pods, interrupted",
            "description": "the test sends SIGTERM mid-way",
            "controls": [
                {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
            ],
            "method": [replay] if wait else [replay, hold],
            "rollbacks": [],
        }
        path = tmp_path / "experiment.json"
        path.write_text(json.dumps(experiment))
        journal = tmp_path / "journal.json"
        proc = subprocess.Popen(
            [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(path)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "CHAOSMEM_STATE_DIR": str(state), "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + HANG
            merged = 0
            while time.monotonic() < deadline and merged < 40:
                assert proc.poll() is None, proc.communicate()[0].decode()
                time.sleep(0.2)
                for path in state.glob("replays/*/summary.json"):
                    with contextlib.suppress(ValueError, KeyError):  # being replaced
                        merged = json.loads(path.read_text())["completed"]
            assert merged >= 40, "hung: the pods' traffic was not merged live"
            worker = None
            if not wait:
                (pidfile,) = state.glob("replays/*/worker.pid")
                worker = int(pidfile.read_text())
            proc.send_signal(signal.SIGTERM)
            output = proc.communicate(timeout=HANG)[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            rollback(state)  # NB: nothing left running whatever failed
        arrived = len(server.arrived)
    assert proc.returncode != -signal.SIGTERM, output
    run = json.loads(journal.read_text())
    assert run["status"] == "interrupted", output
    extension = next(e for e in run["extensions"] if e["name"] == "chaosmem")
    assert extension["interrupted"]["activity"] == ("replay-in-pods" if wait else "hold"), output
    if not wait:  # the control's restore stopped the worker, which deleted the Job
        assert "replay" in [r["kind"] for r in extension["restored"]], output
    (summary_path,) = state.glob("replays/*/summary.json")
    rid = summary_path.parent.name
    _check_stopped(state, rid, arrived, kube_jobs, worker)
    # (the journal holds the experiment as written; chaosmem's own output and files do not)
    assert TOKEN not in output
    assert TOKEN not in json.dumps(read_summary(state, rid))


def _second(seq: int, sent: int) -> bytes:
    line = {"seq": seq, "t": 1e9 + seq, "elapsed": seq + 1.0, "sent": sent, "completed": sent,
            "status": {"200": sent}, "errors": {}, "lag_p99_ms": 0.1}  # fmt: skip
    return (LOG_SECOND + json.dumps(line) + "\n").encode()


def test_a_follower_keeps_each_second_once_in_order_and_marks_what_was_lost(
    tmp_path: Path,
    kube_jobs: JobDouble,  # noqa: F811
) -> None:
    pod = make_pod("replay-0", "shop", labels={"app": "x"}, containers={"replay": None})
    kube_jobs.add_pod(pod)
    own = {"state": "done", "sent": 9, "completed": 9, "status": {"200": 9}, "pid": 7}
    lines = [
        b"a warning from a library\n",
        _second(0, 1),
        _second(1, 2),
        _second(1, 2),  # read again after a resumed stream
        b"chaosmem-second [1, 2]\n",  # JSON, not an object
        b'chaosmem-second {"seq": 9' + b"9" * (2 * MAX_LINE) + b"}\n",  # too long to parse
        _second(4, 6),  # 2 and 3 rotated away while the stream was down
        _second(10**12, 5),  # no second of this replay's clock
        (LOG_SUMMARY + json.dumps(own) + "\n").encode(),
        _second(5, 100),  # after the summary: not the shard's
    ]
    key = ("shop", "replay-0")
    with kube_jobs.lock:
        kube_jobs.log_lines[key] = [(time.time(), line) for line in lines]
        kube_jobs.logs[key] = bytearray(b"".join(lines))
        kube_jobs.exited.add(key)
    api = connect()
    # the double serves a followed log as the API server does: chunked
    response = api.core.read_namespaced_pod_log(
        "replay-0", "shop", container="replay", follow=True, _preload_content=False
    )
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.read() == b"".join(lines)
    started_at = time.time() - 30  # the shared clock started 30 s ago
    follower = PodFollower(api, "shop", 0, tmp_path / "shard", started_at=started_at)
    follower.attach("replay-0", pod["metadata"]["uid"])
    assert follower.ended.wait(HANG), "hung: the follower did not end"
    written = [
        json.loads(x) for x in (tmp_path / "shard" / "seconds.jsonl").read_text().splitlines()
    ]
    assert [(x.get("seq"), x["sent"], bool(x.get("lost"))) for x in written] == [
        (0, 1, False), (1, 2, False), (None, 0, True), (None, 0, True), (4, 6, False)
    ]  # fmt: skip
    assert [x["elapsed"] for x in written] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [x["t"] for x in written if x.get("lost")] == [
        round(started_at + 3, 3), round(started_at + 4, 3)
    ]  # fmt: skip
    assert follower.lost == 2 and follower.final
    assert json.loads((tmp_path / "shard" / "summary.json").read_text()) == own


@pytest.mark.parametrize("killed", ["coordinator", "coordinator-and-worker"])
def test_a_background_replay_in_pods_after_its_coordinator_was_killed(
    tmp_path: Path,
    config: dict[str, Any],
    kube_jobs: JobDouble,  # noqa: F811
    capture: Path,
    killed: str,
) -> None:
    """``chaos run`` killed: the worker dies with it (PR_SET_PDEATHSIG: SIGTERM) and deletes the
    Job itself; both killed: ``chaosmem rollback`` deletes the Job and its Secret."""
    state = Path(config["chaosmem_state_dir"])
    program = (
        "import sys, json, time\n"
        "from chaosmem.traffic.actions import replay_traffic\n"
        "started = replay_traffic(**json.loads(sys.argv[1]))\n"
        "print(json.dumps(started), flush=True)\n"
        "time.sleep(600)\n"
    )
    with RecordingServer() as server:
        arguments = {
            "capture": capture.name, "target_url": server.url, "loop": True, "duration": "10m",
            "headers": {"Authorization": TOKEN}, "wait": False, "configuration": config,
            "scale": {**SCALE, "pods": 2, "start_delay": "2s"},
        }  # fmt: skip
        run = subprocess.Popen(
            [sys.executable, "-c", program, json.dumps(arguments)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert run.stdout is not None
            started = json.loads(run.stdout.readline() or "{}")
            assert started.get("state") == "running", "the background replay did not start"
            _wait_live(config, server, completed=40, replay_id=started["replay_id"])
            if killed == "coordinator-and-worker":
                os.kill(started["pid"], signal.SIGKILL)
                deadline = time.monotonic() + HANG
                while _alive(started["pid"]) and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            run.kill()
            run.wait(HANG)
        if killed == "coordinator":
            deadline = time.monotonic() + HANG
            while _alive(started["pid"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(started["pid"]), "hung: the worker outlived its coordinator"
            assert not kube_jobs.jobs and not kube_jobs.secrets  # it deleted them itself
            arrived = len(server.arrived)
            _check_stopped(state, started["replay_id"], arrived, kube_jobs, started["pid"])
            return
        # nothing of ours is left to delete the Job: it runs on, as after any crash
        assert kube_jobs.jobs and kube_jobs.secrets
        assert {e.kind for e in Ledger(state).read().open()} == {"replay", JOB_KIND}
        result = subprocess.run(
            [str(Path(sys.executable).parent / "chaosmem"), "rollback", "--state-dir", str(state)],
            capture_output=True, text=True, timeout=HANG,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "replay job shop/" in result.stdout and "replay secret shop/" in result.stdout
    assert not kube_jobs.jobs and not kube_jobs.secrets
    assert not Ledger(state).read().open()
    kube_jobs.wait_pods(HANG)
    assert TOKEN not in result.stdout + result.stderr


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([LOG_SECOND, LOG_SUMMARY, "chaosmem-", ""]),
    body=st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())),
)
def test_a_pod_log_line_parses_to_an_object_or_nothing(prefix: str, body: bytes) -> None:
    parsed = parse_line(prefix.encode() + body)
    if parsed is None:
        return
    kind, data = parsed
    assert isinstance(data, dict)
    assert (kind, prefix) in {("second", LOG_SECOND), ("summary", LOG_SUMMARY)}
    # whatever a line holds, tallying and merging it never raises and counts only sane numbers
    tally = SecondsTally()
    tally.add(data)
    running = tally.summary(started_at=1e9)
    assert running["sent"] >= 0 and running["completed"] >= 0
    assert all(type(n) is int and n >= 0 for n in running["status"].values())
    merge_seconds([data, {"t": 1.0, "sent": 1}])


def test_deeply_nested_and_lost_lines_are_handled() -> None:
    assert parse_line((LOG_SECOND + "[" * 100_000 + "]" * 100_000).encode()) is None
    assert parse_line(LOG_SECOND.encode() + b"{" + b"1" * (MAX_LINE + 1) + b"}") is None
    lost = {"t": 5.0, "elapsed": 5.0, "sent": 0, "completed": 0, "lost": True}
    merged = merge_seconds([lost, {"t": 5.0, "elapsed": 5.0, "sent": 3, "completed": 3}])
    assert merged["lost"] is True and merged["sent"] == 3
