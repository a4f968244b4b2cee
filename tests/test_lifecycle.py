"""The one lifecycle helper, on real processes: identity, SIGTERM-then-SIGKILL, atomic writes."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosmem.lifecycle import Children, ProcessesRemain, alive, cmdline, end_processes
from chaosmem.state import replace_private

#: Counts the SIGTERMs it gets in ``argv[1]``, and exits 0.3 s after the first one.
GRACEFUL = """
import signal, sys, time
got = []
def on_term(*_):
    got.append(time.monotonic())
    open(sys.argv[1], "w").write(str(len(got)))
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while not got or time.monotonic() - got[0] < 0.3:
    time.sleep(0.01)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def _started(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The child once it has said "ready"; afterwards it is gone (killed if the test failed
    first), reaped, and its pipe closed."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    with proc:  # closes the pipe and reaps the child
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def _ours(proc: subprocess.Popen[str]) -> list[int]:
    return [proc.pid] if proc.poll() is None else []


def test_a_graceful_process_gets_one_sigterm_and_ends_by_itself(tmp_path: Path) -> None:
    count = tmp_path / "terms"
    with _started(GRACEFUL, str(count)) as proc:
        assert end_processes(lambda: _ours(proc), grace=5) == [proc.pid]
        assert proc.returncode == 0  # it finished on its own terms, no SIGKILL
    assert count.read_text() == "1"  # 15 polling rounds, one SIGTERM


def test_a_process_ignoring_sigterm_is_killed_after_the_grace() -> None:
    with _started(STUBBORN) as proc:
        started = time.monotonic()
        assert end_processes(lambda: _ours(proc), grace=0.3) == [proc.pid]
        # killed, and not before the grace was over (a lower bound: no noise can break it)
        assert proc.returncode == -9 and time.monotonic() - started >= 0.3


def test_a_foreign_process_is_never_signalled() -> None:
    foreign = subprocess.Popen(["sleep", "30"])
    try:
        mine = lambda argv: "--id" in argv and "abc123" in argv  # noqa: E731
        deadline = time.monotonic() + 120  # a hang guard
        while cmdline(foreign.pid) != ["sleep", "30"]:  # until exec has happened
            assert time.monotonic() < deadline, "hung: sleep never exec'd"
            time.sleep(0.01)
        assert not alive(foreign.pid, identity=mine)
        live = lambda: [p for p in [foreign.pid] if alive(p, identity=mine)]  # noqa: E731
        assert end_processes(live, grace=0.1) == []
        time.sleep(0.1)
        assert foreign.poll() is None  # untouched
    finally:
        foreign.kill()
        foreign.wait()


def test_a_zombie_is_not_alive_and_cannot_be_ended() -> None:
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 120  # a hang guard
    while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "hung: the child never became a zombie"
        time.sleep(0.01)
    try:
        assert cmdline(zombie.pid) == []
        assert not alive(zombie.pid, identity=lambda argv: True)
        # Listed as ours regardless, it never goes away: the helper says so instead of looping.
        with pytest.raises(ProcessesRemain, match=str(zombie.pid)):
            end_processes(lambda: [zombie.pid], grace=0.05, kill_wait=0.2)
    finally:
        zombie.wait()


def test_children_are_reaped_whoever_ended_them() -> None:
    """A child ended elsewhere (here: a plain kill) is reaped and forgotten; one its owner ended
    is reaped by ``forget``. Either way no Popen is left unwaited (a zombie, a ResourceWarning)."""
    children = Children()
    elsewhere, owned = subprocess.Popen(["sleep", "30"]), subprocess.Popen(["sleep", "30"])
    children.add("elsewhere", elsewhere)
    children.add("owned", owned)
    try:
        children.reap_ended()
        assert children.get("elsewhere") is elsewhere  # running: kept
        os.kill(elsewhere.pid, signal.SIGKILL)
        deadline = time.monotonic() + 120  # a hang guard
        while children.get("elsewhere") is not None:
            assert time.monotonic() < deadline, "hung: the killed child was never reaped"
            children.reap_ended()
            time.sleep(0.01)
        assert elsewhere.returncode == -9
        os.kill(owned.pid, signal.SIGKILL)
        children.forget("owned", wait=120)
        assert owned.returncode == -9 and children.get("owned") is None
    finally:
        for proc in (elsewhere, owned):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_replace_private_readers_see_whole_files_only(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    replace_private(path, "a" * 100_000)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stop = threading.Event()
    torn: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            text = path.read_text()
            if text not in ("a" * 100_000, "b" * 200_000):
                torn.append(len(text))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(300):
        replace_private(path, "b" * 200_000 if i % 2 else "a" * 100_000)
    stop.set()
    thread.join()
    assert torn == []
    assert sorted(os.listdir(tmp_path)) == ["status.json"]  # no temporary file left


def test_replace_private_failing_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        replace_private(target, b"x")
    assert sorted(os.listdir(tmp_path)) == ["taken"]
