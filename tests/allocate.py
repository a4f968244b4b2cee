"""Grow memory inside a cgroup until the kernel OOM-kills it, reporting bytes like a stressor.

``python allocate.py CGROUP STATE_DIR``: the parent starts a child that joins CGROUP and grows by
2 MiB every 40 ms, writing what it holds to ``STATE_DIR/stress/allocate.json``; the parent waits,
says how the child ended, and exits 0, so the experiment's action succeeds and the report shows
the OOM kill from the kernel's counter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def child(cgroup: Path, state: Path) -> None:
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    report = state / "stress" / "allocate.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    held: list[bytearray] = []
    for _ in range(1000):
        held.append(bytearray(2 << 20))
        report.write_text(json.dumps({"bytes": len(held) * (2 << 20)}))
        time.sleep(0.04)


def main() -> int:
    if sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    done = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:3]], check=False)
    (Path(sys.argv[2]) / "stress" / "allocate.json").unlink(missing_ok=True)
    print(f"allocator ended with {done.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
