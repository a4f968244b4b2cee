"""The verdict a CI gate can trust: passed, deviated, failed or interrupted, and why.

Stricter than Chaos Toolkit's exit code on purpose. ``chaos run`` exits 0 when the steady-state
hypothesis is not met *before* the method (it records ``status: completed``, ``deviated: false``
and skips the method), so a gate reading the exit code passes an experiment that never ran. Here:

- ``interrupted``: Chaos Toolkit's status is ``interrupted`` or ``aborted``;
- ``failed``: the status is ``failed``, the hypothesis was not met before the method, or an
  activity of the method failed (a refused ``tighten_memory_limit`` would otherwise "pass" an
  experiment that applied no pressure at all);
- ``deviated``: the hypothesis was not met after the method, or during it;
- ``passed``: none of the above, in a journal Chaos Toolkit could have written for a completed
  run (its status one Chaos Toolkit writes, its parts of the types it writes them in) where at
  least one steady-state check ran, when the experiment declares a hypothesis.

The reasons say exactly which checks ran: with ``--hypothesis-strategy after-method-only`` the
hypothesis is "met after the method; not checked before it", never "met before and after".

Failed rollbacks, and anything the control could not restore, are warnings: the experiment's
answer stands, but the report says loudly that a target may still be constrained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from chaosmem.report.journal import as_dict, as_list, chaosmem_extension

__all__ = ["Verdict", "describe_output", "describe_tolerance", "failure_message", "judge", "worst"]

Status = Literal["passed", "deviated", "failed", "interrupted"]
#: Worst first: a game day's verdict is its worst experiment's.
SEVERITY: tuple[Status, ...] = ("interrupted", "failed", "deviated", "passed")


#: The statuses ``chaos run`` writes into a journal.
CHAOS_STATUSES = ("completed", "failed", "aborted", "interrupted")
#: The parts every journal ``chaos run`` writes has, and their JSON types.
_JOURNAL_PARTS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("chaoslib-version", str, "a string"),
    ("experiment", dict, "an object"),
    ("start", str, "a string"),
    ("end", str, "a string"),
    ("status", str, "a string"),
    ("deviated", bool, "true or false"),
    ("steady_states", dict, "an object"),
    ("run", list, "a list"),
    ("rollbacks", list, "a list"),
)
_RUN_STATUSES = ("succeeded", "failed", "skipped")


@dataclass(frozen=True)
class Verdict:
    status: Status
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Which steady-state checks ran and how they ended: ``before``/``after``: "met", "not met"
    #: or "not run"; ``during``: "not run", or how many of its checks were met.
    checks: dict[str, str] = field(default_factory=dict)

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
    for probe in as_list(state.get("probes")):
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


def _not_chaos_written(journal: dict[str, Any]) -> list[str]:
    """Why Chaos Toolkit could not have written this journal (empty when it could have)."""
    found: list[str] = []
    for key, kind, expected in _JOURNAL_PARTS:
        if key not in journal:
            found.append(f"it has no '{key}'")
        elif not isinstance(journal[key], kind) or (
            kind is not bool and isinstance(journal[key], bool)
        ):
            found.append(f"its '{key}' is {short(journal[key], 40)}, not {expected}")
    if "extensions" in journal and not isinstance(journal["extensions"], list):
        found.append(f"its 'extensions' is {short(journal['extensions'], 40)}, not a list")
    if isinstance(journal.get("status"), str) and journal["status"] not in CHAOS_STATUSES:
        found.append(
            f"its status {short(journal['status'], 40)} is not one Chaos Toolkit writes "
            f"({', '.join(CHAOS_STATUSES)})"
        )
    for key in ("run", "rollbacks"):
        items = journal.get(key)
        for index, run in enumerate(items if isinstance(items, list) else []):
            if not isinstance(run, dict) or run.get("status") not in _RUN_STATUSES:
                found.append(f"'{key}[{index}]' is not an activity run Chaos Toolkit records")
                break
    states = journal.get("steady_states")
    if isinstance(states, dict):
        for phase in ("before", "after"):
            state = states.get(phase)
            if state is not None and (
                not isinstance(state, dict) or not isinstance(state.get("steady_state_met"), bool)
            ):
                found.append(f"its steady state '{phase}' is not one Chaos Toolkit records")
    return found


def _checks(states: dict[str, Any]) -> dict[str, str]:
    checks: dict[str, str] = {}
    for phase in ("before", "after"):
        state = states.get(phase)
        checks[phase] = (
            "not run"
            if not isinstance(state, dict)
            else ("met" if state.get("steady_state_met") is True else "not met")
        )
    during = [s for s in as_list(states.get("during")) if isinstance(s, dict)]
    met = sum(1 for s in during if s.get("steady_state_met") is True)
    checks["during"] = f"met {met} of {len(during)} times" if during else "not run"
    return checks


def _met_sentence(checks: dict[str, str]) -> str:
    """ "met before and after the method", "met after the method; not checked before it", ..."""
    where = {"before": "before the method", "after": "after the method"}
    ran = [p for p in ("before", "after") if checks[p] == "met"]
    skipped = [p for p in ("before", "after") if checks[p] == "not run"]
    text = "the steady-state hypothesis was met " + (
        "before and after the method" if len(ran) == 2 else where[ran[0]] if ran else ""
    )
    if checks["during"] != "not run":
        text += f"{' and ' if ran else ''}during it ({checks['during']})"
    if skipped:
        text += "; it was not checked " + " or ".join(where[p] for p in skipped)
    return text


def judge(journal: dict[str, Any]) -> Verdict:
    """The verdict of one journal."""
    status = journal.get("status")
    states = as_dict(journal.get("steady_states"))
    before, after = states.get("before"), states.get("after")
    runs = [r for r in as_list(journal.get("run")) if isinstance(r, dict)]
    reasons: dict[Status, list[str]] = {s: [] for s in SEVERITY}
    checks = _checks(states)
    experiment = as_dict(journal.get("experiment"))
    if journal.get("chaosmem_crash_report") is True:
        return Verdict(
            "interrupted",
            [
                "the run was interrupted before Chaos Toolkit wrote a journal: this report is "
                "rebuilt from the run's timeline and the ledger; no steady-state check is known"
            ],
            [
                f"the control could not restore {short(i.get('target') or i.get('kind'))}: "
                f"{short(i['error'], 300)}"
                for i in chaosmem_extension(journal)["restored"]
                if isinstance(i, dict) and i.get("error")
            ],
            checks,
        )
    forged = _not_chaos_written(journal)
    if forged:
        reasons["failed"].append(
            "this is not a journal Chaos Toolkit could have written: " + "; ".join(forged)
        )

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
    for during in as_list(states.get("during")):
        if isinstance(during, dict) and during.get("steady_state_met") is False:
            unmet = "; ".join(_unmet(during)) or "no probe detail recorded"
            reasons["deviated"].append(
                f"the steady-state hypothesis deviated during the method: {unmet}"
            )
            break

    declared = isinstance(experiment.get("steady-state-hypothesis"), dict)
    if declared and set(checks.values()) == {"not run"} and status == "completed":
        reasons["failed"].append(
            "the experiment declares a steady-state hypothesis but no check of it ran "
            "(--hypothesis-strategy skip?): nothing was verified"
        )
    warnings = [
        f"rollback '{_name(r)}' failed: {failure_message(r)}"
        for r in as_list(journal.get("rollbacks"))
        if isinstance(r, dict) and r.get("status") == "failed"
    ]
    for item in chaosmem_extension(journal)["restored"]:
        if isinstance(item, dict) and item.get("error"):
            warnings.append(
                f"the control could not restore {short(item.get('target') or item.get('kind'))}: "
                f"{short(item['error'], 300)}"
            )
    if not declared and status == "completed":
        warnings.append("the experiment has no steady-state hypothesis: nothing was verified")

    for level in SEVERITY[:-1]:
        if reasons[level]:
            others = [r for s in SEVERITY[:-1] if s != level for r in reasons[s]]
            return Verdict(level, reasons[level] + others, warnings, checks)
    if status != "completed":  # NB: unreachable for a journal that passed the checks above
        return Verdict("failed", [f"Chaos Toolkit's status is {short(status)}"], warnings, checks)
    return Verdict(
        "passed",
        [_met_sentence(checks)] if declared else ["the run completed"],
        warnings,
        checks,
    )


def worst(statuses: list[Status]) -> Status:
    for level in SEVERITY:
        if level in statuses:
            return level
    return "passed"
