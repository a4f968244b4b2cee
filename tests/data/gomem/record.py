"""Record the MemStats series the gomem health tests judge, from the real demo service.

    .venv/bin/python tests/data/gomem/record.py   # rewrites tests/data/gomem/*.json

Each scenario starts ``demo/bin/orders`` (``make orders`` first), drives it over HTTP, and keeps
one ``/debug/vars`` snapshot every 0.5 s (parsed by chaosmem.gomem.memstats.parse_expvar).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from chaosmem.gomem.memstats import fetch_memstats  # noqa: E402
from tests.orders_support import OrdersService, build_orders, http  # noqa: E402

GOROUTINES_ENV = {"ORDERS_MAX_INFLIGHT": "5000", "ORDERS_LATENCY": "20s"}
ORDER = b'{"customer":"ann","items":[{"sku":"a","quantity":2,"price":3.5}]}'


def record(
    name: str, env: dict[str, str], drive: Callable[[OrdersService, threading.Event], None]
) -> None:
    log = HERE / f".{name}.log"
    with OrdersService(log, env=env) as svc:
        stop = threading.Event()
        worker = threading.Thread(target=drive, args=(svc, stop), daemon=True)
        worker.start()
        samples = []
        for _ in range(16):
            samples.append({"t": round(time.time(), 3), **fetch_memstats(f"{svc.url}/debug/vars")})
            time.sleep(0.5)
        stop.set()
        worker.join(timeout=60)
    log.unlink(missing_ok=True)
    (HERE / f"{name}.json").write_text(json.dumps(samples, indent=1) + "\n")
    print(name, len(samples), "samples")


def traffic(svc: OrdersService, stop: threading.Event) -> None:
    while not stop.is_set():
        http("POST", f"{svc.url}/orders", ORDER)
        http("GET", f"{svc.url}/orders?limit=50")


def leak(svc: OrdersService, stop: threading.Event) -> None:
    http("POST", f"{svc.url}/admin/leak?on=1&size=256Ki")
    traffic(svc, stop)


def _stuck(url: str) -> None:
    with contextlib.suppress(OSError):  # the service stops before these requests end
        http("GET", url, timeout=60)


def pile_up(svc: OrdersService, stop: threading.Event) -> None:
    """Requests stuck on a slow downstream: each holds a goroutine (and its stack)."""
    threads = []
    for _ in range(400):
        if stop.is_set():
            break
        t = threading.Thread(target=_stuck, args=(f"{svc.url}/orders",))
        t.daemon = True
        t.start()
        threads.append(t)
        time.sleep(0.015)
    stop.wait()


def spike(svc: OrdersService, stop: threading.Event) -> None:
    http("GET", f"{svc.url}/spike?size=256Mi")
    traffic(svc, stop)


def main() -> None:
    build_orders()
    if len(sys.argv) > 1:  # one scenario: record.py spike
        scenario = {"steady": traffic, "leak": leak, "goroutines": pile_up, "spike": spike}
        env = {"spike": {"GOGC": "20"}, "goroutines": GOROUTINES_ENV}.get(sys.argv[1], {})
        record(sys.argv[1], env, scenario[sys.argv[1]])
        return
    record("steady", {"GOMEMLIMIT": "400MiB"}, traffic)
    record("leak", {"GOMEMLIMIT": "400MiB"}, leak)
    record("goroutines", GOROUTINES_ENV, pile_up)
    record("spike", {"GOGC": "20"}, spike)


if __name__ == "__main__":
    main()
