"""stop_on_signals with real signals to this process: stop, hand on, and a second signal."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from chaosmem.interrupts import ESCALATE_AFTER, StopRequest, stop_on_signals, take_interrupts


class Owner(Exception):
    """What the handler in place before raises (as Chaos Toolkit's InterruptExecution does)."""


@pytest.fixture
def owner() -> Iterator[list[int]]:
    calls: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        calls.append(signum)
        raise Owner(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    take_interrupts()
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, previous)
        take_interrupts()


def _send_later(*delays: float) -> threading.Thread:
    def send() -> None:
        for delay in delays:
            time.sleep(delay)
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_the_work_stops_then_the_owner_gets_the_signal_once(owner: list[int]) -> None:
    stopped = StopRequest()
    finished: list[str] = []
    sender = _send_later(0.1, 0.05)  # a second one right after: the same request
    with pytest.raises(Owner), stop_on_signals(stopped.set, work="test"):
        assert stopped.wait(10)
        time.sleep(0.3)  # the work winds down (writes its summary) undisturbed
        finished.append("wound down")
    sender.join()
    assert finished == ["wound down"] and owner == [signal.SIGTERM]
    assert [i.signal for i in take_interrupts()] == ["SIGTERM"]


def test_a_later_second_signal_goes_to_the_owner_at_once(owner: list[int]) -> None:
    stopped = StopRequest()
    reached: list[str] = []
    sender = _send_later(0.1, ESCALATE_AFTER + 0.2)
    started = time.monotonic()
    with pytest.raises(Owner), stop_on_signals(stopped.set, work="test"):
        assert stopped.wait(10)
        time.sleep(30)  # a stop that hangs: the second signal cuts it short
        reached.append("never")
    sender.join()
    assert reached == [] and owner == [signal.SIGTERM]
    assert time.monotonic() - started < 10


def test_off_the_main_thread_nothing_is_installed(owner: list[int]) -> None:
    seen: list[object] = []

    def work() -> None:
        with stop_on_signals(lambda: None, work="test"):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]  # still the owner's
