"""What the chaosmem control needs to know about chaostoolkit-addons' safeguards.

The safeguards control stops a run by sending the process SIGUSR1, which chaoslib turns into
``SystemExit`` in the main thread wherever it is. Two consequences for the control:

- the restore at the end of a run must not itself be cut short by a guard that fires late:
  :func:`holding_exits` sets the addons' own "experiment finished" flag (its guards check it
  before interrupting) and holds SIGUSR1/SIGUSR2 off until the restore is over — and SIGTERM and
  SIGINT too (chaoslib turns them into exceptions wherever the main thread is: a second Ctrl-C
  or a `kill` must not leave a limit half-restored; SIGKILL still ends everything, and
  ``chaosmem rollback`` finishes the job then);
- the journal should say which guard stopped the run, when, and what its probe returned:
  :func:`tripped` reads it from the addons' guardian.

Both do nothing when chaostoolkit-addons is not loaded in this run.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chaosmem.timestamps import iso_seconds

__all__ = ["holding_exits", "tripped"]

logger = logging.getLogger("chaostoolkit")
_SAFEGUARDS = "chaosaddons.controls.safeguards"
_SYNC = "chaosaddons.controls.synchronization"


def tripped() -> dict[str, Any] | None:
    """``{"name", "at", "output"}`` of the safeguard that stopped this run, or None."""
    module = sys.modules.get(_SAFEGUARDS)
    guardian = getattr(module, "guardian", None)
    if guardian is None or not getattr(guardian, "was_triggered", False):
        return None
    run = getattr(guardian, "triggered_by_run", None) or {}
    output = run.get("output") if isinstance(run, dict) else None
    return {
        "name": str(guardian.triggered_by),
        # NB: the probe's end is when the line was seen crossed; the addons log no other time.
        "at": iso_seconds(run.get("end")) if isinstance(run, dict) else None,
        "output": output if isinstance(output, int | float | str | bool | None) else str(output),
    }


@contextmanager
def holding_exits() -> Iterator[None]:
    """No safeguard may interrupt what runs inside (the restore); see the module doc."""
    sync = sys.modules.get(_SYNC)
    finished = getattr(sync, "experiment_finished", None)
    if isinstance(finished, threading.Event):
        finished.set()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, lambda s, f: held.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            names = ", ".join(sorted({signal.Signals(s).name for s in held}))
            logger.warning(
                "chaosmem: %s arrived while the run was being restored; the restore finished "
                "first, and the run ends now",
                names,
            )
