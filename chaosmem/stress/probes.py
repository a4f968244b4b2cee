"""Probes: what became of this run's allocation stress, so a hypothesis can prove an OOM kill.

Chaos Toolkit checks the steady-state hypothesis before *and* after the method, so a plain "the
stressor was OOM-killed" cannot sit in it: before the method there is no stressor. The
:func:`stress_outcome` verdict names that moment instead of hiding it — ``"no-stressor-yet"``
while this run has started no stressor — and the experiment accepts it explicitly::

    "tolerance": {"type": "regex", "target": "verdict", "pattern": "^(oom-killed|no-stressor-yet)$"}

Once the run has started any stressor, the verdict is ``"oom-killed"`` only when at least one
stressor matched ``size``/``growth_rate`` and the kernel OOM-killed every one that did;
``"none-matched"`` when none matched (a selector that no longer fits the method must not pass
vacuously), ``"survived"`` when a matching one ended, or still runs, without an OOM kill.

Which stressors: only those the ledger records for the current run (the run id the chaosmem
control sets); an earlier run's stressor status is never read. Outside a run there is no
answer, and the probe says so.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import ChaosmemError
from chaosmem.ledger import Entry, Ledger, current_run
from chaosmem.state import state_dir
from chaosmem.stress.engine import PAGE
from chaosmem.stress.status import read_bounded_status, status_path
from chaosmem.stress.stopping import STRESSOR_KIND
from chaosmem.units import format_size, parse_rate, parse_size

__all__ = ["stress_outcome"]

logger = logging.getLogger("chaostoolkit")

VERDICTS = ("no-stressor-yet", "oom-killed", "none-matched", "survived")
#: A stressor id becomes a file name: nothing else is read as one.
_STRESSOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_RUNNING = ("ramp", "hold", "release")


@dataclass(frozen=True)
class _Engine:
    """One engine process's last word, from its status file."""

    id: str
    size: int | None
    rate: float | None
    phase: str
    killed: bool


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _engine(directory: Path, entry: Entry) -> _Engine:
    stressor_id = str(entry.undo.get("id", ""))
    if not _STRESSOR_ID.fullmatch(stressor_id) or ".." in stressor_id:
        return _Engine(stressor_id, None, None, "bad-id", False)
    status = read_bounded_status(status_path(directory, stressor_id))
    if status is None:
        return _Engine(stressor_id, None, None, "no-status", False)
    # NB: the run is checked on the status too: a file another run rewrote is not this run's.
    if status.get("run") != entry.run:
        return _Engine(stressor_id, None, None, "other-run", False)
    kills = status.get("kills")
    killed = (
        status.get("phase") == "killed"
        or status.get("oom_killed") is True
        or (isinstance(kills, int) and not isinstance(kills, bool) and kills > 0)
    )
    size = _number(status.get("size"))
    phase = status.get("phase")
    return _Engine(
        stressor_id,
        None if size is None else int(size),
        _number(status.get("rate")) or None,
        phase if isinstance(phase, str) else "unknown",
        killed,
    )


def _group(stressor_id: str) -> str:
    """Workers of one injection share the id before ``-<index>`` (see stress/inject.py)."""
    head, _, tail = stressor_id.rpartition("-")
    return head if head and tail.isdigit() else stressor_id


def _describe(engines: list[_Engine]) -> dict[str, Any]:
    """One injection (its workers together): the size and rate it asked for, its outcome."""
    sizes = [e.size for e in engines]
    rates = [e.rate for e in engines]
    size = None if None in sizes else sum(s for s in sizes if s is not None)
    rate = None if None in rates else sum(r for r in rates if r is not None)
    if any(e.killed for e in engines):
        outcome = "oom-killed"
    elif any(e.phase in _RUNNING for e in engines):
        outcome = "running"
    else:
        outcome = ",".join(sorted({e.phase for e in engines}))
    return {
        "id": _group(engines[0].id),
        "workers": len(engines),
        "size": size,
        "growth_rate": rate,
        "outcome": outcome,
    }


def _matches(row: dict[str, Any], size: int | None, rate: float | None) -> bool:
    if size is not None and row["size"] != size:
        return False
    if rate is not None:
        got = row["growth_rate"]
        return got is not None and math.isclose(got, rate, rel_tol=1e-9)
    return True


def _selector(size: str | int | None, growth_rate: str | float | None) -> str:
    parts = [f"size={size}"] if size is not None else []
    parts += [f"growth_rate={growth_rate}"] if growth_rate is not None else []
    return " ".join(parts) or "any"


def stress_outcome(
    size: str | int | None = None,
    growth_rate: str | float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """What became of this run's stressors that grew ``size`` at ``growth_rate`` (each
    optional, both as given to ``inject_allocation_stress``; no selector means every stressor
    of the run), with a ``verdict`` a hypothesis can check before and after the method:

    - ``"no-stressor-yet"``: this run has started no stressor (before the method);
    - ``"oom-killed"``: at least one stressor matched, and the kernel OOM-killed each of them
      (a stressor of several workers counts as killed when one of its workers was);
    - ``"none-matched"``: the run started stressors, but none with that size and rate;
    - ``"survived"``: a matching stressor ended (or still runs) without an OOM kill.

    ``size`` selects by the bytes the stressor asked for, so it must be a size ("200Mi"), not a
    share of a limit. It reads the status files of the stressors the ledger records for the
    current run only; outside a run (no chaosmem control) it fails rather than guess.
    """
    wanted_size = None
    if size is not None:
        wanted_size = -(-parse_size(size, name="size", minimum=1) // PAGE) * PAGE
    wanted_rate = None
    if growth_rate is not None:
        wanted_rate = parse_rate(growth_rate, name="growth_rate")
    run = current_run()
    if not run:
        raise ChaosmemError(
            "stress_outcome reads only this run's stressors, and there is no run id: declare "
            "the chaosmem control in the experiment (it gives the run an id)"
        )
    directory = state_dir(configuration)
    entries = [
        e for e in Ledger(directory).read().entries if e.kind == STRESSOR_KIND and e.run == run
    ]
    groups: dict[str, list[_Engine]] = {}
    for entry in entries:
        engine = _engine(directory, entry)
        groups.setdefault(_group(engine.id), []).append(engine)
    rows = [_describe(engines) for engines in groups.values()]
    matched = [row for row in rows if _matches(row, wanted_size, wanted_rate)]
    killed = [row for row in matched if row["outcome"] == "oom-killed"]
    selector = _selector(size, growth_rate)
    if not rows:
        verdict = "no-stressor-yet"
        summary = f"run {run} has started no stressor yet: nothing to check"
    elif not matched:
        verdict = "none-matched"
        summary = f"none of run {run}'s {len(rows)} stressor(s) matched {selector}"
    elif len(killed) == len(matched):
        verdict = "oom-killed"
        summary = f"the kernel OOM-killed all {len(matched)} stressor(s) matching {selector}"
    else:
        verdict = "survived"
        escaped = ", ".join(
            f"{row['id']} ({format_size(row['size'])}: {row['outcome']})"
            for row in matched
            if row["outcome"] != "oom-killed"
        )
        summary = (
            f"{len(matched) - len(killed)} of {len(matched)} stressor(s) matching {selector} "
            f"were not OOM-killed: {escaped}"
        )
    logger.info("chaosmem: stress outcome: %s", summary)
    return {
        "verdict": verdict,
        "run": run,
        "selector": {"size": wanted_size, "growth_rate": wanted_rate},
        "started": len(rows),
        "matched": len(matched),
        "oom_killed": len(killed),
        "stressors": rows,
        "summary": summary,
    }
