"""The verdict a CI gate can trust: passed, deviated, failed or interrupted, and why.

Stricter than Chaos Toolkit's exit code on purpose. ``chaos run`` exits 0 when the steady-state
hypothesis is not met *before* the method (it records ``status: completed``, ``deviated: false``
and skips the method), so a gate reading the exit code passes an experiment that never ran. Here:

- ``interrupted``: Chaos Toolkit's status is ``interrupted`` or ``aborted``;
- ``failed``: the status is ``failed``, the hypothesis was not met before the method, or an
  activity of the method failed (a refused ``tighten_memory_limit`` would otherwise "pass" an
  experiment that applied no pressure at all);
- ``deviated``: the hypothesis was not met after the method, or during it;
- ``passed``: none of the above.

Failed rollbacks, and anything the control could not restore, are warnings: the experiment's
answer stands, but the report says loudly that a target may still be constrained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from chaosmem.report.journal import as_dict, chaosmem_extension

__all__ = ["Verdict", "describe_output", "describe_tolerance", "failure_message", "judge", "worst"]

Status = Literal["passed", "deviated", "failed", "interrupted"]
#: Worst first: a game day's verdict is its worst experiment's.
SEVERITY: tuple[Status, ...] = ("interrupted", "failed", "deviated", "passed")


@dataclass(frozen=True)
class Verdict:
    status: Status
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_output(value: Any) -> str:
    return short(value)


def describe_tolerance(tolerance: Any) -> str:
    """Chaos Toolkit's tolerance forms, as a person would say them."""
    if isinstance(tolerance, dict):
        kind = tolerance.get("type")
        if kind == "range":
            return f"in range {short(tolerance.get('range'))}" + (
                f" at {tolerance['target']}" if tolerance.get("target") else ""
            )
        if kind == "jsonpath":
            expect = f" == {short(tolerance['expect'])}" if "expect" in tolerance else ""
            return f"jsonpath {tolerance.get('path')}{expect}"
        if kind == "regex":
            return f"matches /{tolerance.get('pattern')}/"
        if kind == "probe":
            return f"probe {tolerance.get('name', '?')}"
    if isinstance(tolerance, list) and len(tolerance) == 2:
        return f"between {short(tolerance[0])} and {short(tolerance[1])}"
    return short(tolerance)


def failure_message(run: dict[str, Any]) -> str:
    """The last line of an activity's recorded exception: the message its author wrote."""
    exception = run.get("exception")
    if isinstance(exception, list):
        lines = [line.strip() for line in exception if isinstance(line, str) and line.strip()]
        if lines:
            return short(lines[-1], 300)
    return short(exception, 300) if exception else "no message recorded"


def _name(run: dict[str, Any]) -> str:
    activity = run.get("activity")
    return str(activity.get("name", "?")) if isinstance(activity, dict) else "?"


def _unmet(state: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for probe in state.get("probes") or []:
        if not isinstance(probe, dict):
            continue
        activity = as_dict(probe.get("activity"))
        if probe.get("status") == "failed":
            found.append(f"probe '{_name(probe)}' failed: {failure_message(probe)}")
        elif probe.get("tolerance_met") is False:
            found.append(
                f"probe '{_name(probe)}' returned {describe_output(probe.get('output'))}, "
                f"expected {describe_tolerance(activity.get('tolerance'))}"
            )
    return found


def judge(journal: dict[str, Any]) -> Verdict:
    """The verdict of one journal."""
    status = journal.get("status")
    states = as_dict(journal.get("steady_states"))
    before, after = states.get("before"), states.get("after")
    runs = [r for r in journal.get("run") or [] if isinstance(r, dict)]
    reasons: dict[Status, list[str]] = {s: [] for s in SEVERITY}

    if status in {"interrupted", "aborted"}:
        last = f" during '{_name(runs[-1])}'" if runs else ""
        reasons["interrupted"].append(f"Chaos Toolkit stopped the run ({status}){last}")
    if isinstance(before, dict) and before.get("steady_state_met") is False:
        unmet = "; ".join(_unmet(before)) or "no probe detail recorded"
        reasons["failed"].append(
            f"the steady-state hypothesis was not met before the method, which did not run: {unmet}"
        )
    for run in runs:
        if run.get("status") == "failed":
            reasons["failed"].append(f"activity '{_name(run)}' failed: {failure_message(run)}")
    if status == "failed" and not reasons["failed"]:
        reasons["failed"].append("Chaos Toolkit marked the run failed")
    if journal.get("deviated") or (
        isinstance(after, dict) and after.get("steady_state_met") is False
    ):
        unmet = "; ".join(_unmet(after)) if isinstance(after, dict) else ""
        reasons["deviated"].append(
            "the steady-state hypothesis was not met after the method"
            + (f": {unmet}" if unmet else "")
        )
    for during in states.get("during") or []:
        if isinstance(during, dict) and during.get("steady_state_met") is False:
            unmet = "; ".join(_unmet(during)) or "no probe detail recorded"
            reasons["deviated"].append(
                f"the steady-state hypothesis deviated during the method: {unmet}"
            )
            break

    warnings = [
        f"rollback '{_name(r)}' failed: {failure_message(r)}"
        for r in journal.get("rollbacks") or []
        if isinstance(r, dict) and r.get("status") == "failed"
    ]
    for item in chaosmem_extension(journal)["restored"]:
        if isinstance(item, dict) and item.get("error"):
            warnings.append(
                f"the control could not restore {short(item.get('target') or item.get('kind'))}: "
                f"{short(item['error'], 300)}"
            )
    if (
        not isinstance(before, dict)
        and status == "completed"
        and not journal.get("experiment", {}).get("steady-state-hypothesis")
    ):
        warnings.append("the experiment has no steady-state hypothesis: nothing was verified")

    for level in SEVERITY[:-1]:
        if reasons[level]:
            others = [r for s in SEVERITY[:-1] if s != level for r in reasons[s]]
            return Verdict(level, reasons[level] + others, warnings)
    return Verdict(
        "passed",
        ["the steady-state hypothesis was met before and after the method"]
        if isinstance(after, dict)
        else ["the run completed"],
        warnings,
    )


def worst(statuses: list[Status]) -> Status:
    for level in SEVERITY:
        if level in statuses:
            return level
    return "passed"
