"""Stress within bounds everywhere (issues 9.10 and 9.2 for the stress path).

The foreground command runs inside a fresh child memory cgroup with a small limit, so that even
if a check failed, the kernel would stop the engine there and never touch this session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosmem.errors import InvalidArgument
from chaosmem.host import host_memory
from chaosmem.stress.actions import inject_allocation_stress
from chaosmem.stress.supervisor import ENGINE_PATH
from chaosmem.targets.cgroup import Cgroup
from tests.conftest import REPO
from tests.stress_support import MI, no_stressor_outlives_the_test, target_of

__all__ = ["no_stressor_outlives_the_test"]


def foreground(group: Cgroup, state: dict[str, Any], *args: str) -> tuple[int, str]:
    """``chaosmem stress ARGS`` (no --target) started inside ``group``."""
    process = group.spawn(
        [
            sys.executable,
            "-m",
            "chaosmem.cli",
            "stress",
            *args,
            "--state-dir",
            state["chaosmem_state_dir"],
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = process.communicate(timeout=120)
    return process.returncode, err.decode()


def test_foreground_size_above_the_host_is_refused(cgroup: Cgroup, state: dict[str, Any]) -> None:
    """Before: `chaosmem stress --size 100Gi` without --target exec'd the engine at once."""
    host = host_memory()
    assert host is not None
    cgroup.set_memory_limit(host + (1 << 30))  # a limit above the host bounds nothing
    code, err = foreground(cgroup, state, "--size", str(host + MI), "--hold", "0")
    assert code == 2, err
    assert "argument '--size'" in err and "host's memory" in err
    assert cgroup.oom_kill_count() == 0


def test_foreground_size_above_its_own_cgroup_limit_is_refused(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    cgroup.set_memory_limit(96 * MI)
    code, err = foreground(cgroup, state, "--size", "128Mi", "--hold", "0")
    assert code == 2, err
    assert "own cgroup" in err and "--allow-oom" in err
    assert cgroup.oom_kill_count() == 0
    code, err = foreground(cgroup, state, "--size", "8Mi", "--hold", "0")
    assert code == 0, err  # within the limit it runs as before


def test_the_action_refuses_above_the_host_without_a_limit(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    host = host_memory()
    assert host is not None
    with pytest.raises(InvalidArgument, match="allow_above_host"):
        inject_allocation_stress(target_of(cgroup), size=host, configuration=state)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("hold", 10**400),
        ("hold", "1e400"),
        ("hold", 1e308),
        ("growth_rate", "1e400/s"),
        ("growth_rate", 10**400),
        ("growth_rate", "50mi/s"),
        ("fragmentation", 10**400),
        ("fragmentation", "nan"),
        ("size", "1e9999999"),
        ("size", 10**400),
    ],
)
def test_huge_and_non_finite_stress_arguments_name_the_argument(
    cgroup: Cgroup, state: dict[str, Any], argument: str, value: object
) -> None:
    """Before: OverflowError/ValueError tracebacks from units.py, supervisor.py and engine.py."""
    arguments: dict[str, Any] = {"size": "8Mi", argument: value}
    with pytest.raises(InvalidArgument) as info:
        inject_allocation_stress(target_of(cgroup), **arguments, configuration=state)
    assert info.value.name == argument
    assert cgroup.pids() == []


def test_a_ramp_of_years_is_refused(cgroup: Cgroup, state: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="within 1e\\+09s") as info:
        inject_allocation_stress(target_of(cgroup), size="2Gi", growth_rate=1, configuration=state)
    assert info.value.name == "growth_rate"


@pytest.mark.parametrize(
    "args",
    [
        ["--rate", "1e-300"],
        ["--rate", "inf"],
        ["--hold", "inf"],
        ["--hold", "1e400"],
        ["--deadline", "1e400"],
        ["--deadline", "nan"],
        ["--size", str(1 << 70)],
    ],
)
def test_the_engine_refuses_unbounded_arguments_without_a_traceback(
    tmp_path: Path, args: list[str]
) -> None:
    base = {"--size": "4096", "--hold": "0"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [sys.executable, "-I", "-S", ENGINE_PATH, "--id", "bounds"]
    for flag, value in base.items():
        argv += [flag, value]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr


def test_a_slow_rate_split_between_workers_still_runs(
    cgroup: Cgroup, state: dict[str, Any]
) -> None:
    """1 byte/s over 4 workers is 0.25 byte/s each: the engine's own bounds must accept it."""
    import time

    from chaosmem.stress.actions import stop_allocation_stress
    from chaosmem.stress.stopping import is_stressor

    started = inject_allocation_stress(
        target_of(cgroup), size="16Ki", growth_rate=1, workers=4, hold="1s", configuration=state
    )
    try:
        time.sleep(1.0)
        ids = [s["id"] for s in started["stressors"]]
        alive = [is_stressor(pid, sid) for pid, sid in zip(started["pids"], ids, strict=True)]
        assert alive == [True] * 4
    finally:
        stop_allocation_stress(target_of(cgroup), configuration=state)
