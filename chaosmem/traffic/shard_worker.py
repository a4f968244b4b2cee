"""``python -m chaosmem.traffic.shard_worker SHARD_DIR PARENT_PID``: one shard of a replay.

Started only by :func:`chaosmem.traffic.shard.run_sharded`, which wrote ``SHARD_DIR/spec.json``
(the options, the compiled schedule's directory, which shard of how many). It maps the
schedule, prints ``ready``, reads the agreed start time (unix seconds) from stdin, and replays
its shard on that clock; results go to ``SHARD_DIR``. It dies with its parent
(``PR_SET_PDEATHSIG``) and, with a ``duration``, by ``alarm()`` if its event loop were stuck.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path
from typing import Any

from chaosmem.traffic.compile import open_compiled
from chaosmem.traffic.options import ReplayOptions
from chaosmem.traffic.replay import run_engine
from chaosmem.traffic.schedule import Schedule
from chaosmem.traffic.worker import die_with_parent

__all__ = ["main"]


def main(argv: list[str]) -> int:
    directory, parent = Path(argv[0]), int(argv[1])
    die_with_parent(parent)
    spec = json.loads((directory / "spec.json").read_text(encoding="utf-8"))
    # the masked arguments (credential headers, a URL password) come first on stdin
    secrets = json.loads(sys.stdin.readline() or "{}")
    changes: dict[str, Any] = {}
    if "headers" in secrets:
        changes["set_headers"] = tuple((str(k), str(v)) for k, v in secrets["headers"].items())
    if "target_url" in secrets:
        changes["target_url"] = str(secrets["target_url"])
    options = ReplayOptions.from_spec(spec["options"], **changes)
    compiled = open_compiled(Path(spec["compiled"]))
    schedule = Schedule(options, compiled, shard=int(spec["shard"]), shards=int(spec["shards"]))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line.strip():
        return 3  # the coordinator went away before the start
    start_at = float(line)
    if not math.isfinite(start_at):
        return 2
    if options.duration is not None:
        # Last resort if the event loop itself were stuck: the default SIGALRM action kills us.
        signal.alarm(math.ceil(options.duration + options.timeout + 30))
    run_engine(
        options,
        schedule,
        replay_id=str(spec["replay_id"]),
        out_dir=directory,
        start_at=start_at,
        detail=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
