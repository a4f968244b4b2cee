"""``python -m chaosmem.traffic.pod``: one pod of a replay Job (see :mod:`chaosmem.traffic.kubejob`).

Reads the replay from ``$CHAOSMEM_REPLAY`` (the options, the shard count, the agreed start
time) and its shard from ``$JOB_COMPLETION_INDEX`` (set by Kubernetes for an Indexed Job). The
capture is in ``$CHAOSMEM_CAPTURE_DIR`` (a ConfigMap or PVC volume), or is first downloaded
there from ``capture_url``. The pod compiles it, replays its shard from the start time, and
prints its per-second lines and its summary as its last log lines, where the coordinator
reads them. SIGTERM (the Job deleted, its deadline) stops it gracefully: the lines still print.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from chaosmem.traffic.compile import compile_capture
from chaosmem.traffic.options import parse_options
from chaosmem.traffic.replay import run_engine
from chaosmem.traffic.schedule import Schedule

__all__ = ["LOG_SECOND", "LOG_SUMMARY", "main"]

LOG_SECOND = "chaosmem-second "
LOG_SUMMARY = "chaosmem-summary "


def _download(url: str, into: Path) -> Path:
    name = os.path.basename(urlsplit(url).path) or "capture"
    target = into / name
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    return target


def main() -> int:
    spec = json.loads(os.environ["CHAOSMEM_REPLAY"])
    index = int(os.environ["JOB_COMPLETION_INDEX"])
    shards = int(spec["shards"])
    if not 0 <= index < shards:
        print(f"chaosmem: JOB_COMPLETION_INDEX {index} is not a shard of {shards}", file=sys.stderr)
        return 2
    root = Path(os.environ.get("CHAOSMEM_CAPTURE_DIR", "/capture"))
    work = Path(os.environ.get("CHAOSMEM_WORK_DIR", "/tmp/chaosmem"))
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    options_spec = dict(spec["options"])
    if spec.get("capture_url"):
        files = [str(_download(str(spec["capture_url"]), root))]
    else:
        files = [str(root / name) for name in options_spec["capture"]]
    options_spec["capture"] = files
    options = parse_options(**options_spec)
    start_at = float(spec["start_at"])
    if not math.isfinite(start_at):
        return 2
    compiled = compile_capture(options, cache=work / "cache")
    out = work / "out"
    summary = run_engine(
        options,
        Schedule(options, compiled, shard=index, shards=shards),
        replay_id=str(spec["replay_id"]),
        out_dir=out,
        start_at=start_at,
        detail=True,
    )
    with (out / "seconds.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            sys.stdout.write(LOG_SECOND + line.rstrip("\n") + "\n")
    sys.stdout.write(LOG_SUMMARY + json.dumps(summary, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
