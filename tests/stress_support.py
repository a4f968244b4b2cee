"""Helpers shared by the stress tests (the fixtures ``state`` and ``cgroup`` come from conftest)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaosmem.ledger import Ledger, set_current_run
from chaosmem.stress import supervisor
from chaosmem.stress.stopping import STRESSOR_KIND
from chaosmem.targets.cgroup import Cgroup

MI = 1 << 20


@pytest.fixture(autouse=True)
def no_stressor_outlives_the_test() -> Iterator[None]:
    """Whatever a test started in this process is stopped when it ends (by its own pid)."""
    yield
    for live in list(supervisor._LIVE.values()):
        live.stop(grace=0.5)


def wait_until(check: Callable[[], bool], *, timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


def ledgered(state: Path, run: str | None, ids: list[str]) -> None:
    """Ledger entries for stressors ``ids`` of ``run``, as inject_allocation_stress records them."""
    try:
        set_current_run(run)
        for stressor_id in ids:
            Ledger(state).record(kind=STRESSOR_KIND, target={}, undo={"id": stressor_id})
    finally:
        set_current_run(None)


def target_of(group: Cgroup) -> dict[str, str]:
    return {"type": "cgroup", "path": str(group.path)}
