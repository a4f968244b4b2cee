"""``python -m chaosmem.traffic.worker REPLAY_DIR PARENT_PID``: one background replay.

Started only by :func:`chaosmem.traffic.background.start_background`, which wrote
``REPLAY_DIR/spec.json`` and the ledger entry (two, for a replay in pods: the Job's too) first.
See that module for why a process, and for the three things that keep this process from
outliving its experiment.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import Ledger
from chaosmem.traffic.background import read_spec
from chaosmem.traffic.options import ReplayOptions, parse_options
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


def _run_job(spec: dict[str, Any], secrets: dict[str, Any]) -> str:
    """A replay in pods (``spec["job"]``): create the Job, follow it, delete it; its outcome."""
    from chaosmem.traffic.kubejob import STOP_DRAIN, job_deadline, parse_scale, run_job

    changes: dict[str, Any] = {}
    masked = secrets.get("options") or {}
    if "headers" in masked:
        changes["set_headers"] = tuple((str(k), str(v)) for k, v in masked["headers"].items())
    if "target_url" in masked:
        changes["target_url"] = str(masked["target_url"])
    options = ReplayOptions.from_spec(spec["options"], **changes)
    scale = parse_scale(secrets.get("scale"))
    # Last resort if this process were stuck: the Job's own deadline ends the pods, and the
    # ledger entry (written before the Job) lets rollback delete it.
    signal.alarm(math.ceil(scale.start_delay + job_deadline(options, scale) + STOP_DRAIN + 120))
    kubernetes = secrets.get("kubernetes")
    summary = run_job(
        options,
        scale,
        state=Path(spec["state_dir"]),
        configuration={"chaosmem_kubernetes": kubernetes} if kubernetes else None,
        replay_id=spec["replay_id"],
        entry=spec["job"]["ledger_entry"],
    )
    return str(summary["state"])


def main(argv: list[str]) -> int:
    out, parent = Path(argv[0]), int(argv[1])
    die_with_parent(parent)
    spec = read_spec(out)
    # what must not be on disk comes on stdin: the masked arguments (credential headers, a
    # URL password) and, for a replay in pods, its scale and the cluster's client settings
    secrets = json.loads(sys.stdin.buffer.read() or b"{}")
    if "job" in spec:
        ledger = Ledger(Path(spec["state_dir"]))
        outcome = "failed"
        try:
            outcome = _run_job(spec, secrets)
        except ChaosmemError as exc:
            print(f"chaosmem: {exc}", file=sys.stderr)
            return 2
        finally:
            ledger.close(spec["ledger_entry"], f"replay {outcome}")
        return 0
    options = parse_options(**{**spec["options"], **(secrets.get("options") or {})})
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
