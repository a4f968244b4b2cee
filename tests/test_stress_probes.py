"""stress_outcome on real stressors in a real child memory cgroup: a verdict of this run only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import chaosmem
from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.ledger import Ledger
from chaosmem.stress.actions import inject_allocation_stress, stop_allocation_stress
from chaosmem.stress.probes import stress_outcome
from chaosmem.stress.stopping import STRESSOR_KIND
from chaosmem.targets.cgroup import Cgroup
from tests.stress_support import MI, no_stressor_outlives_the_test, target_of

__all__ = ["no_stressor_outlives_the_test"]


def in_run(monkeypatch: pytest.MonkeyPatch, run: str) -> None:
    """What the chaosmem control does at the start of a run: give it an id."""
    monkeypatch.setenv("CHAOSMEM_RUN_ID", run)


def killed(group: Cgroup, state: dict[str, Any], size: str = "64Mi") -> dict[str, Any]:
    """A stressor that grows past the cgroup's 32Mi limit: the kernel OOM-kills it."""
    group.set_memory_limit(32 * MI)
    result = inject_allocation_stress(
        target_of(group), size=size, growth_rate="256Mi/s", wait=True, configuration=state
    )
    assert result["oom_killed"] is True, result
    return result


def survived(group: Cgroup, state: dict[str, Any], size: str = "4Mi") -> dict[str, Any]:
    """A stressor that fits under the limit and ends on its own."""
    result = inject_allocation_stress(
        target_of(group), size=size, growth_rate="64Mi/s", wait=True, configuration=state
    )
    assert result["oom_killed"] is False, result
    return result


def test_before_any_stressor_the_verdict_says_so(
    state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_run(monkeypatch, "run-before")
    outcome = stress_outcome(size="200Mi", growth_rate="50Mi/s", configuration=state)
    assert outcome["verdict"] == "no-stressor-yet"
    assert outcome["started"] == 0 and outcome["stressors"] == []
    assert outcome["run"] == "run-before"


def test_outside_a_run_it_refuses_to_guess(state: dict[str, Any]) -> None:
    with pytest.raises(ChaosmemError, match="no run id"):
        stress_outcome(configuration=state)


def test_an_oom_killed_stressor_passes_and_a_surviving_one_does_not(
    cgroup: Cgroup, state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_run(monkeypatch, "run-kill")
    fate = killed(cgroup, state)
    outcome = stress_outcome(size="64Mi", growth_rate="256Mi/s", configuration=state)
    assert outcome["verdict"] == "oom-killed", outcome
    assert outcome["matched"] == outcome["oom_killed"] == 1
    [row] = outcome["stressors"]
    assert row["id"] == fate["stressors"][0]["id"] and row["outcome"] == "oom-killed"
    assert row["size"] == 64 * MI and row["growth_rate"] == 256 * MI

    cgroup.set_memory_limit(256 * MI)
    kept = survived(cgroup, state)
    # the selector picks the stressor the claim is about, so the other one does not matter …
    assert stress_outcome(size="64Mi", configuration=state)["verdict"] == "oom-killed"
    # … but a claim about the one that fitted is false, and says which one and why
    outcome = stress_outcome(size="4Mi", growth_rate="64Mi/s", configuration=state)
    assert outcome["verdict"] == "survived", outcome
    assert kept["stressors"][0]["id"] in outcome["summary"] and "done" in outcome["summary"]
    # no selector: every stressor of the run must have been killed
    assert stress_outcome(configuration=state)["verdict"] == "survived"
    # a selector that fits no stressor of the run is not a vacuous pass
    for selector in (
        {"size": "8Mi"},
        {"growth_rate": "50Mi/s"},
        {"size": "64Mi", "growth_rate": "64Mi/s"},
    ):
        outcome = stress_outcome(**selector, configuration=state)
        assert outcome["verdict"] == "none-matched" and outcome["started"] == 2, outcome


def test_an_earlier_runs_stressor_status_is_never_read(
    cgroup: Cgroup, state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_run(monkeypatch, "run-earlier")
    earlier = killed(cgroup, state)
    assert stress_outcome(size="64Mi", configuration=state)["verdict"] == "oom-killed"

    in_run(monkeypatch, "run-later")
    assert stress_outcome(size="64Mi", configuration=state)["verdict"] == "no-stressor-yet"
    cgroup.set_memory_limit(256 * MI)
    later = survived(cgroup, state, size="64Mi")  # the same size, but this time it fits
    outcome = stress_outcome(size="64Mi", configuration=state)
    assert outcome["verdict"] == "survived", outcome
    assert [row["id"] for row in outcome["stressors"]] == [later["stressors"][0]["id"]]
    assert earlier["stressors"][0]["id"] not in json.dumps(outcome)


def test_a_status_file_rewritten_by_another_run_or_symlinked_does_not_count(
    cgroup: Cgroup, state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_run(monkeypatch, "run-own")
    cgroup.set_memory_limit(256 * MI)
    result = survived(cgroup, state)
    path = Path(result["stressors"][0]["status_file"])
    status = json.loads(path.read_text())
    assert status["run"] == "run-own"

    claim = {**status, "phase": "killed", "oom_killed": True, "kills": 1}
    path.write_text(json.dumps({**claim, "run": "run-other"}))
    assert stress_outcome(size="4Mi", configuration=state)["stressors"][0]["outcome"] == "other-run"

    fake = path.with_name("elsewhere.txt")
    fake.write_text(json.dumps(claim))
    path.unlink()
    os.symlink(fake, path)
    outcome = stress_outcome(size="4Mi", configuration=state)
    assert outcome["verdict"] == "none-matched", outcome  # its size is unknown: no status read
    assert outcome["stressors"][0]["outcome"] == "no-status"
    assert stress_outcome(configuration=state)["verdict"] == "survived"

    path.unlink()
    path.write_text(json.dumps(claim).replace('"kills": 1', '"kills": NaN'))
    assert stress_outcome(configuration=state)["stressors"][0]["outcome"] == "no-status"


def test_workers_of_one_injection_are_one_stressor(
    cgroup: Cgroup, state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_run(monkeypatch, "run-workers")
    cgroup.set_memory_limit(32 * MI)
    inject_allocation_stress(
        target_of(cgroup), size="128Mi", growth_rate="256Mi/s", workers=2, wait=True,
        configuration=state,
    )  # fmt: skip
    outcome = stress_outcome(size="128Mi", growth_rate="256Mi/s", configuration=state)
    [row] = outcome["stressors"]
    assert row["workers"] == 2 and row["size"] == 128 * MI, outcome
    assert outcome["verdict"] == "oom-killed"


def test_a_respawned_stressor_counts_its_kills_and_a_running_one_has_not_been_killed(
    cgroup: Cgroup, state: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    in_run(monkeypatch, "run-respawn")
    cgroup.set_memory_limit(48 * MI)
    result = inject_allocation_stress(
        target_of(cgroup), size="96Mi", growth_rate="512Mi/s", hold="1s", respawn=True, wait=True,
        configuration=state,
    )  # fmt: skip
    assert result["kills"] >= 1, result
    # the engine that ran last rewrote the status file; the kills it carries still count
    assert stress_outcome(size="96Mi", configuration=state)["verdict"] == "oom-killed"

    cgroup.set_memory_limit(256 * MI)
    running = inject_allocation_stress(
        target_of(cgroup), size="8Mi", growth_rate="64Mi/s", configuration=state
    )
    try:
        outcome = stress_outcome(size="8Mi", configuration=state)
        assert outcome["verdict"] == "survived", outcome
        row = outcome["stressors"][-1]
        assert row["id"] == running["stressors"][0]["id"], outcome
        assert row["outcome"] == "running", outcome
    finally:
        stop_allocation_stress(target_of(cgroup), configuration=state)


def test_a_stressor_id_that_is_not_a_file_name_is_never_opened(
    state: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    in_run(monkeypatch, "run-ids")
    directory = Path(state["chaosmem_state_dir"])
    outside = tmp_path / "claim.json"
    outside.write_text(json.dumps({"run": "run-ids", "phase": "killed", "size": 4096}))
    ledger = Ledger(directory)
    for bad in ("../../claim", "/etc/passwd", ".hidden", ""):
        ledger.record(kind=STRESSOR_KIND, target={"type": "cgroup"}, undo={"id": bad})
    outcome = stress_outcome(configuration=state)
    assert outcome["verdict"] == "survived", outcome
    assert {row["outcome"] for row in outcome["stressors"]} == {"bad-id"}


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"size": "60%"}, "size"),
        ({"size": "abc"}, "size"),
        ({"size": 0}, "size"),
        ({"size": -5}, "size"),
        ({"size": float("inf")}, "size"),
        ({"size": True}, "size"),
        ({"growth_rate": "fast"}, "growth_rate"),
        ({"growth_rate": float("nan")}, "growth_rate"),
        ({"growth_rate": -1}, "growth_rate"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(
    state: dict[str, Any], monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any], name: str
) -> None:
    in_run(monkeypatch, "run-args")
    with pytest.raises(InvalidArgument) as caught:
        stress_outcome(**arguments, configuration=state)
    assert caught.value.name == name
    assert repr(arguments[name]) in str(caught.value) and "expected" in str(caught.value)


def test_discovery_lists_the_probe() -> None:
    found = [a for a in chaosmem.discover()["activities"] if a["mod"] == "chaosmem.stress.probes"]
    assert [(a["name"], a["type"]) for a in found] == [("stress_outcome", "probe")]
    assert [arg["name"] for arg in found[0]["arguments"]][:2] == ["size", "growth_rate"]
