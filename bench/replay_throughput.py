"""chaosmem replay throughput next to wrk -t2, against the same loopback nginx, interleaved.

    python bench/replay_throughput.py [--requests 200000] [--rounds 3] [--seconds 5]

What it does, all in one run:

1. writes a goreplay capture of ``--requests`` distinct requests (own path, query, session
   header and cookie each) to a file, and compiles it once (timed: that is the parse cost
   chaosmem pays before the clock starts, once per capture and options);
2. for each of ``--rounds`` rounds, back to back against one nginx (``worker_processes 1``,
   keep-alive, 3-byte body): ``wrk -t2 -c64`` for ``--seconds``, then ``chaosmem replay``
   of the whole capture, unthrottled (``--rate`` far above what it can do, no ``--loop``),
   with ``--workers 1`` and with ``--workers 2``. Each chaosmem run is a fresh process that
   reads the capture from disk (its compiled schedule is memory-mapped from the state dir's
   cache; the file is hashed each run to find it): no looped or in-memory capture;
3. prints per round and as min/median/max: req/s, the ratio to wrk -t2 of the same round, and
   CPU seconds (user + system, of the whole process tree, start-up included) per 100,000
   requests answered, with the part spent sending (the replay engines' own ``cpu_s``) and the
   requests per CPU second as a ratio to wrk's (a figure other load on the machine skews less
   than req/s);
4. replays the capture at a fixed rate of 80% of each configuration's median unthrottled
   figure, as many interleaved rounds, and prints min/median/max of the schedule lag p99
   (actual send time minus scheduled, as the replayer records it from its monotonic clock) and
   of the rate delivered.

The replay engine is the compiled one when ``chaosmem native`` has built it (``make setup``
does); ``CHAOSMEM_NATIVE=0`` measures the interpreted one. Which ran is printed.

Goals (issue 14; a benchmark, not a test): >= 0.9x wrk -t2 unthrottled, <= 1.0 CPU s per 100k
requests on one worker, lag p99 <= 10 ms at 80%. The machine may be shared: ratios from the
same round matter more than absolute figures. nginx comes from the Debian package
``nginx-light`` (``make deps``). Everything started here ends here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaosmem.traffic.capture import write_gor_record  # noqa: E402
from chaosmem.traffic.compile import compile_capture  # noqa: E402
from chaosmem.traffic.options import parse_options  # noqa: E402

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
CONNECTIONS = 64


def find_nginx() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if not found:
        sys.exit("bench: nginx is missing; install the Debian package nginx-light (make deps)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: nginx did not listen on {port}")


def write_capture(path: Path, count: int) -> int:
    """``count`` distinct requests, 1 ms apart on the recorded clock, as goreplay writes them."""
    t0 = 1_700_000_000_000_000_000
    with path.open("wb", buffering=1 << 20) as out:
        for i in range(count):
            request = (
                f"GET /shop/items/{i}?page={i % 50}&sort=price HTTP/1.1\r\n"
                "Host: prod.example.com\r\nUser-Agent: Mozilla/5.0 (capture)\r\n"
                f"Accept: application/json\r\nX-Session-Id: s{i % 5000}\r\n"
                f"Cookie: sid=s{i % 5000}; theme=dark\r\nAccept-Encoding: gzip\r\n\r\n"
            ).encode()
            write_gor_record(out, kind=1, at_ns=t0 + i * 1_000_000, payload=request)
    return path.stat().st_size


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, seconds: float) -> dict[str, float]:
    before = children_cpu()
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    cpu = children_cpu() - before
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rate or not total:
        sys.exit(f"bench: cannot read wrk's output:\n{out}")
    return {"rps": float(rate.group(1)), "cpu100k": cpu / int(total.group(1)) * 100_000}


def run_chaosmem(
    capture: Path, url: str, state: Path, *, workers: int, rate: float
) -> dict[str, Any]:
    before = children_cpu()
    result = subprocess.run(
        [sys.executable, "-m", "chaosmem.cli", "replay", str(capture), "--target", url,
         "--rate", f"{rate:g}", "--timeout", "10s", "--concurrency", str(CONNECTIONS),
         "--workers", str(workers), "--state-dir", str(state), "--json"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    cpu = children_cpu() - before
    if result.returncode != 0:
        sys.exit(f"bench: chaosmem replay failed:\n{result.stderr}\n{result.stdout[-2000:]}")
    summary: dict[str, Any] = json.loads(result.stdout)
    errors = sum(summary["errors"].values())
    return {
        # what was answered, over the replay's own time (first scheduled send to last answer)
        "rps": summary["completed"] / summary["duration_s"],
        "cpu100k": cpu / max(summary["completed"], 1) * 100_000,
        # the replay engines' own CPU while sending (start-up, import and cache lookup excluded)
        "engine100k": summary["cpu_s"] / max(summary["completed"], 1) * 100_000,
        "errors": errors,
        "completed": summary["completed"],
        "lag_p99": summary["lag_ms"]["p99"],
        "duration": summary["duration_s"],
        "engine": summary.get("engine") or "?",
    }


def spread(values: list[float], fmt: str = "{:,.2f}") -> str:
    return (
        f"min {fmt.format(min(values))}  median {fmt.format(statistics.median(values))}  "
        f"max {fmt.format(max(values))}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000, help="requests in the capture")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    args = parser.parse_args()
    if args.rounds < 3:
        sys.exit("bench: --rounds must be at least 3")
    if not shutil.which("wrk"):
        sys.exit("bench: wrk is missing; install the Debian package wrk (make deps)")
    nginx = find_nginx()
    with tempfile.TemporaryDirectory(prefix="chaosmem-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        (work / "nginx.conf").write_text(NGINX_CONF.format(dir=work, port=port))
        server = subprocess.Popen(
            [nginx, "-c", str(work / "nginx.conf"), "-p", str(work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_listening(port)
            url = f"http://127.0.0.1:{port}"
            capture = work / "shop.gor"
            size = write_capture(capture, args.requests)
            state = work / "state"
            # NB: byte-compiled first, as pip does when it installs a package: each chaosmem run
            # below is a fresh process, and compiling its sources again each time (the developer's
            # PYTHONDONTWRITEBYTECODE) is no part of what a replay costs
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(ROOT / "chaosmem")], check=True
            )
            started = time.perf_counter()
            compiled = compile_capture(
                parse_options(capture=str(capture), target_url=url),
                cache=state / "cache" / "schedules",
            )
            compile_s = time.perf_counter() - started
            rows: list[dict[str, Any]] = []
            for round_no in range(1, args.rounds + 1):
                wrk = run_wrk(url + "/shop/items/1?page=1&sort=price", args.seconds)
                one = run_chaosmem(capture, url, state, workers=1, rate=1e9)
                two = run_chaosmem(capture, url, state, workers=2, rate=1e9)
                rows.append({"wrk": wrk, 1: one, 2: two})
                print(
                    f"round {round_no}: wrk -t2 {wrk['rps']:,.0f} req/s | chaosmem workers=1 "
                    f"{one['rps']:,.0f} ({one['rps'] / wrk['rps']:.2f}x, {one['errors']} errors)"
                    f" | workers=2 {two['rps']:,.0f} ({two['rps'] / wrk['rps']:.2f}x, "
                    f"{two['errors']} errors)",
                    flush=True,
                )
            # at 80% of each configuration's median unthrottled rate, as many rounds, interleaved
            sustained = {w: 0.8 * statistics.median(r[w]["rps"] for r in rows) for w in (1, 2)}
            lag: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
            for _round in range(args.rounds):
                for workers in (1, 2):
                    lag[workers].append(
                        run_chaosmem(capture, url, state, workers=workers, rate=sustained[workers])
                    )
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)

    print()
    print(
        f"capture: {args.requests:,} requests, {size / 1e6:.1f} MB on disk, compiled once in "
        f"{compile_s:.2f}s ({compiled.requests:,} requests); {args.rounds} interleaved rounds; "
        f"loopback nginx (1 worker); {os.cpu_count()} cores"
    )
    engines = sorted({r[w]["engine"] for r in rows for w in (1, 2)})
    print(
        f"  chaosmem engine               : {', '.join(engines)} (chaosmem native --check; "
        "CHAOSMEM_NATIVE=0 runs the interpreted one)"
    )
    print(
        f"  wrk -t2 -c{CONNECTIONS} req/s          : {spread([r['wrk']['rps'] for r in rows], '{:,.0f}')}"
    )
    print(f"  wrk -t2 CPU s / 100k          : {spread([r['wrk']['cpu100k'] for r in rows])}")
    for workers in (1, 2):
        runs = [r[workers] for r in rows]
        ratios = [r[workers]["rps"] / r["wrk"]["rps"] for r in rows]
        print(
            f"  chaosmem workers={workers} req/s     : {spread([x['rps'] for x in runs], '{:,.0f}')}"
        )
        print(f"  chaosmem workers={workers} / wrk -t2 : {spread(ratios)}")
        print(f"  chaosmem workers={workers} CPU s/100k: {spread([x['cpu100k'] for x in runs])}")
        print(f"    of which sending          : {spread([x['engine100k'] for x in runs])}")
        # requests per CPU second next to wrk's: what contention from other work cannot skew
        efficiency = [r["wrk"]["cpu100k"] / r[workers]["cpu100k"] for r in rows]
        print(f"  workers={workers} req per CPU s / wrk's: {spread(efficiency)}")
        held = lag[workers]
        print(
            f"  workers={workers} at --rate {sustained[workers]:,.0f} (80%): lag p99 ms "
            f"{spread([x['lag_p99'] or 0.0 for x in held])}; delivered "
            f"{spread([x['rps'] for x in held], '{:,.0f}')} req/s; "
            f"{sum(x['errors'] for x in held)} errors"
        )
    ratio = {w: statistics.median(r[w]["rps"] / r["wrk"]["rps"] for r in rows) for w in (1, 2)}
    best = max(ratio, key=lambda w: ratio[w])
    cpu1 = statistics.median(r[1]["cpu100k"] for r in rows)
    lag_best = statistics.median(x["lag_p99"] or 0.0 for x in lag[best])
    print(
        f"goals: >= 0.9x wrk -t2: {'met' if ratio[best] >= 0.9 else 'NOT met'} "
        f"(median {ratio[best]:.2f}x, workers={best}); <= 1.0 CPU s/100k on one worker: "
        f"{'met' if cpu1 <= 1.0 else 'NOT met'} (median {cpu1:.2f}, start-up included); "
        f"lag p99 <= 10 ms at 80% of that rate: {'met' if lag_best <= 10 else 'NOT met'} "
        f"(median {lag_best:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
