"""Report context -> JUnit test cases: one per experiment (its verdict) and one per probe.

JUnit XML is the one test-result format Jenkins, GitLab and GitHub all read. Each experiment is
a ``<testsuite>``; its ``verdict`` case fails unless the experiment passed, so a CI summary shows
the reason where people look. Each hypothesis probe is a case for before and for after (skipped
when that phase did not run), and each probe of the method is a case that errors if it failed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["junit_context"]


def _probe_case(suite: str, phase: str, row: dict[str, Any] | None, name: str) -> dict[str, Any]:
    case: dict[str, Any] = {"classname": suite, "name": f"{phase}: {name}", "time": 0.0}
    if row is None:
        return {**case, "outcome": "skipped", "message": f"the {phase} hypothesis did not run"}
    case["time"] = row.get("duration") or 0.0
    if row.get("status") == "failed":
        return {
            **case,
            "outcome": "error",
            "message": row.get("error") or "the probe failed",
            "detail": "",
        }
    if row.get("met") is False:
        message = f"returned {row.get('output')}, expected {row.get('tolerance')}"
        return {**case, "outcome": "failure", "message": message, "detail": row.get("output") or ""}
    return {**case, "outcome": "passed", "output": row.get("output") or ""}


def _cases(e: dict[str, Any]) -> list[dict[str, Any]]:
    suite = e["title"]
    verdict = e["verdict"]
    cases: list[dict[str, Any]] = [
        {
            "classname": suite,
            "name": "verdict",
            "time": e.get("duration") or 0.0,
            "outcome": "passed" if verdict["status"] == "passed" else "failure",
            "type": verdict["status"],
            "message": f"{verdict['status']}: {verdict['reasons'][0]}"
            if verdict["reasons"]
            else verdict["status"],
            "detail": "\n".join(
                verdict["reasons"] + [f"warning: {w}" for w in verdict["warnings"]]
            ),
        }
    ]
    hypothesis = e["hypothesis"]
    for phase in ("before", "after"):
        state = hypothesis[phase]
        for index, declared in enumerate(hypothesis["declared"]):
            row = state["probes"][index] if state and index < len(state["probes"]) else None
            cases.append(_probe_case(suite, phase, row, declared["name"]))
    for row in e["method"]:
        if row.get("kind") == "activity" and row.get("type") == "probe":
            cases.append(_probe_case(suite, "method", {**row, "met": None}, row["name"]))
    return cases


def junit_context(report: dict[str, Any]) -> dict[str, Any]:
    suites = []
    for e in report["experiments"]:
        cases = _cases(e)
        suites.append(
            {
                "name": e["title"],
                "file": e["source"],
                "timestamp": e.get("started_at") or "",
                "time": e.get("duration") or 0.0,
                "tests": len(cases),
                "failures": sum(c["outcome"] == "failure" for c in cases),
                "errors": sum(c["outcome"] == "error" for c in cases),
                "skipped": sum(c["outcome"] == "skipped" for c in cases),
                "cases": cases,
            }
        )
    if report.get("not_run"):
        cases = [
            {
                "classname": "runs without a journal",
                "name": row["title"],
                "time": 0.0,
                "outcome": "skipped" if row["status"] == "not-run" else "error",
                "message": f"{row['status']}: {row['reason']}",
                "detail": row["reason"],
            }
            for row in report["not_run"]
        ]
        suites.append(
            {
                "name": "runs without a journal",
                "file": "",
                "timestamp": "",
                "time": 0.0,
                "tests": len(cases),
                "failures": 0,
                "errors": sum(c["outcome"] == "error" for c in cases),
                "skipped": sum(c["outcome"] == "skipped" for c in cases),
                "cases": cases,
            }
        )
    totals = {
        k: sum(s[k] for s in suites) for k in ("tests", "failures", "errors", "skipped", "time")
    }
    return {"name": "chaosmem gate", "suites": suites, **totals}
