"""Record ``experiments/captures/orders.gor``: real traffic to the demo service, in goreplay's format.

    .venv/bin/python demo/record_capture.py [--seconds 30] [--rate 60] [--responses] [--out PATH]

It starts ``demo/bin/orders`` (``make orders``) on a free loopback port, sends it a production-like
mix for ``--seconds`` (open loop, Poisson arrivals at ``--rate`` requests per second): order
listings of varying page size, new orders with one to five items, load-balancer health checks and,
now and then, a report that allocates a large transient buffer (``/spike``). Each request is
written as it went on the wire (goreplay record type 1, with its send time), so the file replays
with its real timing. Like goreplay without ``--input-raw-track-response``, answers are not kept
unless ``--responses`` (type 2, same id, with the latency: order listings make that file ~20x
larger); the statuses they had are printed. The service is stopped at the end.

Why a recording rather than a generated file: a replay should carry the real gaps, bodies and
headers a client sent, and the answers show what "healthy" looked like.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaosmem.traffic.capture import write_gor_record  # noqa: E402

ORDERS = ROOT / "demo" / "bin" / "orders"
CUSTOMERS = ["ann", "bob", "chen", "dara", "eli", "fatima", "goro", "hana", "ivan", "jo"]
SKUS = [f"sku-{i:04d}" for i in range(1, 400)]
AGENTS = ["shop-web/4.2", "shop-ios/7.1 (iPhone)", "shop-android/7.0", "partner-sync/1.3"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_bytes(rng: random.Random, host: str, seq: int) -> bytes:
    """One request of the mix, as raw HTTP/1.1."""
    roll = rng.random()
    headers = [
        f"Host: {host}",
        f"User-Agent: {rng.choice(AGENTS)}",
        f"X-Request-Id: rec-{seq:06d}",
        "Accept: application/json",
    ]
    body = b""
    if roll < 0.55:
        target, method = f"/orders?limit={rng.choice([5, 10, 20, 20, 50, 100])}", "GET"
    elif roll < 0.92:
        order = {
            "customer": rng.choice(CUSTOMERS),
            "items": [
                {
                    "sku": rng.choice(SKUS),
                    "quantity": rng.randint(1, 4),
                    "price": round(rng.uniform(1, 120), 2),
                }
                for _ in range(rng.randint(1, 5))
            ],
            "note": rng.choice(["", "gift wrap", "leave at the door", "x" * rng.randint(0, 400)]),
        }
        body = json.dumps(order).encode()
        target, method = "/orders", "POST"
        headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    elif roll < 0.98:
        target, method = "/healthz", "GET"
    else:
        target, method = f"/spike?size={rng.choice(['8Mi', '16Mi', '24Mi'])}&hold=200ms", "GET"
    head = f"{method} {target} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    return head.encode() + body


def response_bytes(resp: http.client.HTTPResponse, body: bytes) -> bytes:
    """The answer as goreplay stores it (de-chunked, with its length)."""
    lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
    lines += [
        f"{k}: {v}"
        for k, v in resp.getheaders()
        if k.lower() not in {"transfer-encoding", "content-length"}
    ]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def send(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` on a fresh connection; (latency ns, the answer as bytes)."""
    started = time.monotonic_ns()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock, method=raw.split(b" ", 1)[0].decode())
        resp.begin()
        body = resp.read()
    return time.monotonic_ns() - started, response_bytes(resp, body)


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"orders exited with {proc.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("orders did not answer /healthz within 15s")


def record(seconds: float, rate: float, out: Path, seed: int, responses: bool) -> int:
    if not ORDERS.is_file():
        raise SystemExit(f"{ORDERS} is missing: run `make orders` first")
    port = free_port()
    env = {**os.environ, "ORDERS_ADDR": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([str(ORDERS)], env=env, stdout=subprocess.DEVNULL)
    rng = random.Random(seed)
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    tmp = out.with_suffix(".tmp")
    try:
        wait_ready(port, proc)
        with tmp.open("wb") as sink, ThreadPoolExecutor(max_workers=16) as pool:

            def one(seq: int, raw: bytes) -> None:
                rid = os.urandom(12).hex()
                at = time.time_ns()
                try:
                    latency, answer = send(port, raw)
                except OSError:
                    latency, answer = 0, b""
                with lock:
                    write_gor_record(sink, kind=1, at_ns=at, payload=raw, record_id=rid)
                    if answer and responses:
                        write_gor_record(
                            sink,
                            kind=2,
                            at_ns=at + latency,
                            payload=answer,
                            record_id=rid,
                            latency_ns=latency,
                        )
                    if answer:
                        code = int(answer.split(b" ", 2)[1])
                        statuses[code] = statuses.get(code, 0) + 1

            start = time.monotonic()
            due = start
            seq = 0
            while due - start < seconds:
                due += rng.expovariate(rate)
                time.sleep(max(0.0, due - time.monotonic()))
                seq += 1
                pool.submit(one, seq, request_bytes(rng, f"orders.shop.svc:{8080}", seq))
        tmp.replace(out)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        tmp.unlink(missing_ok=True)
    print(
        f"{out}: {seq} requests over {seconds:g}s, answers by status {dict(sorted(statuses.items()))}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=60.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--responses", action="store_true", help="also keep the answers (type 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/captures/orders.gor")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 600 or not 0.1 <= args.rate <= 2000:
        parser.error("--seconds 1..600 and --rate 0.1..2000")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return record(args.seconds, args.rate, args.out, args.seed, args.responses)


if __name__ == "__main__":
    sys.exit(main())
