"""Reports and gates: journal + timeline -> context -> templates.

``build_report`` reads and redacts journals into one context; ``render`` lays it out as HTML,
Markdown, JSON or JUnit XML; ``judge`` is the strict verdict the gate exits on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from chaosmem.report.context import experiment_context, report_context
from chaosmem.report.journal import load_journal
from chaosmem.report.render import FORMATS, render
from chaosmem.report.verdict import Verdict, judge

__all__ = ["FORMATS", "Verdict", "build_report", "judge", "load_journal", "render"]


def build_report(
    paths: Iterable[Path],
    *,
    environ: Mapping[str, str] | None = None,
    redact_env: Iterable[str] = (),
    crashed: Iterable[tuple[str, dict[str, Any]]] = (),
) -> dict[str, Any]:
    """The context of a report over ``paths`` and ``crashed`` runs ((source, journal-shaped dict
    from :func:`chaosmem.report.crashed.crashed_run_journal`)); ``redact_env`` names environment
    variables whose values are secrets the journals do not declare."""
    env = os.environ if environ is None else environ
    extra = [env[name] for name in redact_env if env.get(name)]
    experiments = [
        experiment_context(load_journal(path), source=str(path), environ=env, redact_values=extra)
        for path in paths
    ] + [
        experiment_context(journal, source=source, environ=env, redact_values=extra)
        for source, journal in crashed
    ]
    return report_context(experiments)
