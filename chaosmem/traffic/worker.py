"""``python -m chaosmem.traffic.worker REPLAY_DIR PARENT_PID``: one background replay.

Started only by :func:`chaosmem.traffic.background.start_background`, which wrote
``REPLAY_DIR/spec.json`` and the ledger entry first. See that module for why a process, and
for the three things that keep this process from outliving its experiment.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
from pathlib import Path

from chaosmem.ledger import Ledger
from chaosmem.traffic.background import read_spec
from chaosmem.traffic.options import parse_options
from chaosmem.traffic.replay import run_replay

__all__ = ["die_with_parent", "main"]

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGTERM when ``parent`` (the thread that started us) dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:  # pragma: no cover
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # NB: the parent may have died before prctl took effect; then we were re-parented already.
    if os.getppid() != parent:
        sys.exit(3)


def main(argv: list[str]) -> int:
    out, parent = Path(argv[0]), int(argv[1])
    die_with_parent(parent)
    spec = read_spec(out)
    # the masked arguments (credential headers, a URL password) come on stdin, never on disk
    secrets = json.loads(sys.stdin.buffer.read() or b"{}")
    options = parse_options(**{**spec["options"], **secrets})
    if options.duration is not None:
        # Last resort if the event loop itself were stuck: the default SIGALRM action kills us.
        signal.alarm(math.ceil(options.duration + options.timeout + 30))
    state = Path(spec["state_dir"])
    ledger = Ledger(state)
    outcome = "failed"
    try:
        summary = run_replay(options, state=state, replay_id=spec["replay_id"], make_latest=False)
        outcome = str(summary["state"])
    finally:
        ledger.close(spec["ledger_entry"], f"replay {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
