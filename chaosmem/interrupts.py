"""SIGTERM and SIGINT during a blocking activity: stop the work at once, then hand the signal on.

Why this exists: ``chaos run`` turns SIGTERM into an ``InterruptExecution`` raised wherever the
main thread is. Inside an activity, Chaos Toolkit's Python provider catches it as any other
exception and records a *failed activity*, and the run goes on to end ``completed``; a blocking
activity that installs its own handler and later removes it leaves the default one behind, and
the next SIGTERM kills ``chaos run`` before any control can restore anything.

So a blocking activity (a foreground replay, a ``wait: true`` stressor) runs its wait inside
:func:`stop_on_signals`, which

* remembers the handlers in place (Chaos Toolkit's, Python's ``default_int_handler``, …),
* on SIGTERM/SIGINT asks the work to stop (``stop`` runs in the signal handler: it must not
  block nor take a lock, see :class:`StopRequest`) and notes the interrupt in this process
  (:func:`take_interrupts`),
* puts the remembered handlers back, whatever happens, and once the work has stopped calls the
  remembered handler with the signal, so whoever owned it sees it (``KeyboardInterrupt`` for
  SIGINT, Chaos Toolkit's ``InterruptExecution`` for SIGTERM). A second signal while the work is
  still stopping, :data:`ESCALATE_AFTER` seconds or more after the first, goes to the remembered
  handler at once (SIG_DFL: the process ends); one sooner is the same request.

The chaosmem control reads :func:`take_interrupts` after each activity and interrupts the run,
which Chaos Toolkit's provider would not do by itself, and runs its restore inside
:func:`chaosmem.safeguards.trip.holding_exits`, so that a second Ctrl-C cannot cut an undo in
half. Outside the main thread (signals are only delivered there) nothing is installed.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Protocol, TypeVar

__all__ = [
    "Interrupt",
    "StopRequest",
    "note_interrupt",
    "note_signals",
    "stop_on_signals",
    "take_interrupts",
    "wait_for_all",
]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: A second signal this many seconds after the first goes to the owner at once (see below).
ESCALATE_AFTER = 1.0


@dataclass(frozen=True)
class Interrupt:
    """A signal that stopped a blocking activity: its name, what it stopped, and when."""

    signal: str
    work: str
    at: float


# NB: no lock: signal handlers run on the main thread between any two bytecodes, also while it
# would hold one. deque.append and popleft are atomic.
_seen: deque[Interrupt] = deque()


def note_interrupt(signum: int, *, work: str) -> None:
    """Note that ``signum`` stopped ``work`` (for a caller with a signal handler of its own)."""
    _seen.append(Interrupt(signal.Signals(signum).name, work, time.time()))


def take_interrupts() -> list[Interrupt]:
    """The interrupts noted since the last call, oldest first (and forget them)."""
    taken: list[Interrupt] = []
    while True:
        try:
            taken.append(_seen.popleft())
        except IndexError:
            return taken


Handler = Callable[[int, FrameType | None], object] | int | None


class StopRequest:
    """A flag a signal handler can raise: ``threading.Event.set`` takes a plain lock, which
    the main thread may hold at the very moment its signal handler runs (a deadlock)."""

    def __init__(self) -> None:
        self.requested = False

    def set(self) -> None:
        self.requested = True

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less once the stop is requested; whether it is."""
        deadline = time.monotonic() + timeout
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self.requested


@contextmanager
def stop_on_signals(stop: Callable[[], object], *, work: str) -> Iterator[None]:
    """Run the block with SIGTERM/SIGINT calling ``stop()``; hand the signal on after it.

    ``work`` names what is stopped (``"replay_traffic"``), for the record. When the block
    raises, its exception wins and the signal is not handed on (it was noted all the same).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    first_at: list[float] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if caught:
            # NB: a second signal soon after the first is the same request (a double Ctrl-C, a
            # supervisor sending SIGTERM to the group and the leader); later on, the stop is
            # taking too long and the owner acts now, whatever it cuts short.
            if time.monotonic() - first_at[0] >= ESCALATE_AFTER:
                restore()
                signal.raise_signal(signum)
            return
        caught.append(signum)
        first_at.append(time.monotonic())
        note_interrupt(signum, work=work)
        stop()

    previous, restore = _install(handler)
    try:
        yield
    finally:
        restore()
    if caught:
        _hand_on(previous.get(caught[0]), caught[0], None)


class Joinable(Protocol):
    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the work to end; whether it has."""
        ...


W = TypeVar("W", bound=Joinable)


def wait_for_all(workers: Sequence[W], *, stop: Callable[[W], object], work: str) -> None:
    """Block until every one of ``workers`` has ended; a SIGTERM/SIGINT meanwhile stops them
    all at once (``stop`` each) and is then handed on (see :func:`stop_on_signals`).

    What ``wait: true`` stressors wait with, local or in pods (``work`` names it).
    """
    stopping = StopRequest()
    with stop_on_signals(stopping.set, work=work):
        for worker in workers:
            while not worker.join(0.1) and not stopping.requested:
                pass
        if stopping.requested:
            for worker in workers:
                stop(worker)


def _hand_on(handler: Handler, signum: int, frame: FrameType | None) -> None:
    """Call a Python-level handler as the kernel would have. With SIG_DFL or SIG_IGN the stop is
    the outcome: the work ended cleanly and returns its result (``chaosmem replay`` prints its
    summary)."""
    if callable(handler):
        handler(signum, frame)


def _install(
    handler: Callable[[int, FrameType | None], None],
) -> tuple[dict[int, Handler], Callable[[], None]]:
    """Put ``handler`` on SIGTERM and SIGINT; returns the handlers it replaced and an undo."""
    previous: dict[int, Handler] = {int(sig): signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, handler)

    def restore() -> None:
        for signum, old in previous.items():
            # NB: getsignal() gives None for a handler not installed from Python; SIG_DFL is
            # the closest we can put back.
            signal.signal(signum, old if old is not None else signal.SIG_DFL)

    return previous, restore


def note_signals(*, work: str) -> Callable[[], None]:
    """Note every SIGTERM/SIGINT from now on (then let the handler in place act as before);
    returns the undo. The control wraps each activity in it, so a signal that Chaos Toolkit's
    provider turns into a failed activity still ends the run. A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        note_interrupt(signum, work=work)
        owner = previous.get(signum)
        if callable(owner):
            owner(signum, frame)
        elif owner in (signal.SIG_DFL, None):
            restore()
            signal.raise_signal(signum)

    previous, restore = _install(handler)
    return restore
