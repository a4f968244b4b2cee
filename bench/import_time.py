"""Start-up cost of chaosmem's activity modules, with the kubernetes client as the peer.

Every ``chaos run`` activity and every ``chaosmem`` command starts by importing one of these
modules; issue 8.10 found half of ``import chaosmem.limits.actions`` was the kubernetes client,
pulled in only to parse quantities. Each figure is the CPU time of the import in a fresh
interpreter (CPU, not wall time: the machine is shared), interleaved with the peer
``import kubernetes`` in the same rounds; printed as min/median/max and as a ratio to the peer.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

MODULES = ("chaosmem.limits.actions", "chaosmem.stress.actions", "chaosmem.cli", "kubernetes")
ROUNDS = 7
CODE = (
    "import time, sys; t = time.process_time(); import {m}; "
    "print(time.process_time() - t, any(k.startswith('kubernetes.') for k in sys.modules))"
)


def main() -> int:
    times: dict[str, list[float]] = {m: [] for m in MODULES}
    pulls: dict[str, bool] = {}
    for _ in range(ROUNDS):
        for module in MODULES:
            out = subprocess.run(
                [sys.executable, "-c", CODE.format(m=module)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            times[module].append(float(out[0]))
            pulls[module] = out[1] == "True"
    peer = statistics.median(times["kubernetes"])
    for module, values in times.items():
        median = statistics.median(values)
        print(
            f"{module:28s} CPU s min {min(values):.3f} median {median:.3f} max {max(values):.3f}"
            f"  ratio to import kubernetes {median / peer:.2f}"
            f"  kubernetes imported: {pulls[module]}"
        )
    return 1 if any(pulls[m] for m in MODULES if m != "kubernetes") else 0


if __name__ == "__main__":
    sys.exit(main())
