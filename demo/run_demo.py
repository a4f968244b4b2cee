"""``make demo``: a real game day on the Go orders service, on this machine, in one command.

    .venv/bin/python demo/run_demo.py

What it does, in order (``make demo`` has already built ``demo/bin/orders`` and installed Debian's
``prometheus`` and ``golang-go`` when it could):

1. starts Prometheus on 127.0.0.1 (a free port, 1 s scrape of the orders service, its data in a
   temporary folder);
2. runs ``chaos run experiments/local-gameday.json`` with the orders port and Prometheus URL as
   experiment variables (GOGC and GOMEMLIMIT are variables too: ``DEMO_GOGC``,
   ``DEMO_GOMEMLIMIT``);
3. renders ``reports/local-gameday.html`` (and ``.md``, and JUnit through the strict gate) and
   prints the report's path and the verdict on one line;
4. stops Prometheus, rolls back anything the run could have left (``chaosmem rollback`` on the
   demo's own state dir) and removes the temporary folder, whatever happened before.

Without Go or Prometheus (they could not be installed), it says which is missing and runs
``experiments/local-oom.json`` instead, which needs neither.

The demo succeeds (exit 0) when the experiment ran and its report was written, whatever the
verdict: a deviation is what a game day is for. It fails when the run itself could not happen.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.prometheus import PrometheusError, start  # noqa: E402

BIN = Path(sys.executable).parent
#: Tests point these elsewhere; ``make demo`` uses the defaults.
REPORTS = Path(os.environ.get("DEMO_REPORTS", ROOT / "reports")).absolute()
STATE = Path(os.environ.get("DEMO_STATE", ROOT / ".state" / "demo")).absolute()
PROMETHEUS = os.environ.get("DEMO_PROMETHEUS", "prometheus")
ORDERS = ROOT / "demo" / "bin" / "orders"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing() -> list[str]:
    """What the game day needs and this machine lacks, in words a user can act on."""
    gaps = []
    if not ORDERS.is_file():
        gaps.append("the Go demo service (demo/bin/orders: `make orders` needs Debian's golang-go)")
    if shutil.which(PROMETHEUS) is None:
        gaps.append("Prometheus (Debian package `prometheus`)")
    return gaps


def chaos_run(experiment: str, journal: Path, state: Path, variables: dict[str, str]) -> int:
    argv = [
        str(BIN / "chaos"),
        "--no-version-check",
        "--log-file",
        str(journal.with_suffix(".log")),
    ]
    argv += ["run", "--journal-path", str(journal)]
    for key, value in variables.items():
        argv += ["--var", f"{key}={value}"]
    argv.append(experiment)
    env = {**os.environ, "CHAOSMEM_STATE_DIR": str(state)}
    env.pop("CHAOSMEM_RUN_ID", None)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached chaos run too (same process group); a SIGTERM to us did not: pass it
        # on. Either way, let it restore.
        if _terminated:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def render(name: str, journal: Path) -> str:
    """Write the reports; return the one-line verdict."""
    chaosmem = str(BIN / "chaosmem")
    for suffix in (".html", ".md"):
        subprocess.run(
            [chaosmem, "report", str(journal), "-o", str(REPORTS / f"{name}{suffix}")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    gate = subprocess.run(
        [chaosmem, "gate", str(journal), "--junit", str(REPORTS / f"{name}-junit.xml")],
        capture_output=True,
        text=True,
        check=False,
    )
    first = gate.stdout.splitlines()[0] if gate.stdout else "NO-VERDICT"
    status, _, rest = first.partition(" ")
    why = rest.split("): ", 1)[-1].strip()
    why = why if len(why) <= 140 else why[:139] + "…"
    return f"{display(REPORTS / name)}.html: {status.strip()}: {why}"


def display(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def rollback(state: Path) -> None:
    done = subprocess.run(
        [str(BIN / "chaosmem"), "rollback", "--state-dir", str(state), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    steps = json.loads(done.stdout or "[]") if done.returncode in (0, 1) else []
    for step in steps:
        print(f"demo: restored what the run left: {step['error'] or step['done']}")


_terminated: list[int] = []


def _interrupted(signum: int, frame: object) -> None:
    _terminated.append(signum)
    raise KeyboardInterrupt  # so every finally below runs: Prometheus stopped, rollback done


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    REPORTS.mkdir(parents=True, exist_ok=True)
    state = STATE
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    gaps = missing()
    if gaps:
        print("demo: cannot run the Go game day: missing " + "; ".join(gaps) + ".")
        print("demo: running experiments/local-oom.json instead (a Python allocator, no Go).")
        journal = REPORTS / "local-oom-journal.json"
        journal.unlink(missing_ok=True)
        try:
            chaos_run("experiments/local-oom.json", journal, state, {})
        finally:
            rollback(state)
        if not journal.is_file():
            print(f"demo: chaos run wrote no journal; see {display(journal.with_suffix('.log'))}")
            return 1
        print(render("local-oom", journal))
        return 0

    port = free_port()
    journal = REPORTS / "local-gameday-journal.json"
    journal.unlink(missing_ok=True)  # the report describes this run, never an earlier one
    scratch = Path(tempfile.mkdtemp(prefix="chaosmem-demo-prometheus-"))
    prometheus = None
    try:
        try:
            prometheus = start({"orders": [f"127.0.0.1:{port}"]}, scratch)
        except PrometheusError as exc:
            print(f"demo: Prometheus did not start ({exc}); the Prometheus probes will fail")
        variables = {
            "orders_port": str(port),
            "gogc": os.environ.get("DEMO_GOGC", "100"),
            "gomemlimit": os.environ.get("DEMO_GOMEMLIMIT", "100MiB"),
        }
        if prometheus is not None:
            variables["prometheus_base_url"] = prometheus.url
        print(
            f"demo: orders on 127.0.0.1:{port} (GOGC={variables['gogc']}, "
            f"GOMEMLIMIT={variables['gomemlimit']}), "
            f"Prometheus at {prometheus.url if prometheus else '(none)'}"
        )
        chaos_run("experiments/local-gameday.json", journal, state, variables)
    finally:
        if prometheus is not None:
            prometheus.stop()
        rollback(state)
        shutil.rmtree(scratch, ignore_errors=True)
    if not journal.is_file():
        print(f"demo: chaos run wrote no journal; see {display(journal.with_suffix('.log'))}")
        return 1
    print(render("local-gameday", journal))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("demo: interrupted; everything the run changed was restored and Prometheus stopped")
        sys.exit(130)
