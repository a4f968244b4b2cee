"""Undo what the ledger says is still changed: the engine behind ``chaosmem rollback`` and the control.

Entries are undone newest first, so a limit tightened twice comes back to its first value and a
stressor is stopped before the limit it was pushing against is relaxed. A failing undo is
reported and the rest still run: one stuck entry must not keep every other target tight.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from chaosmem.ledger import Entry, Ledger

__all__ = ["HANDLER_MODULES", "RollbackStep", "rollback"]

logger = logging.getLogger("chaostoolkit")

#: Modules that register undo handlers with :func:`chaosmem.ledger.register_undo`.
HANDLER_MODULES = (
    "chaosmem.targets.cgroup",
    "chaosmem.local.service",
    "chaosmem.stress.stopping",
    "chaosmem.traffic.background",
)


@dataclass(frozen=True)
class RollbackStep:
    entry: Entry
    done: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def load_handlers() -> None:
    for name in HANDLER_MODULES:
        importlib.import_module(name)


def rollback(
    directory: Path, *, run: str | None = None, dry_run: bool = False
) -> list[RollbackStep]:
    """Undo every open entry (of ``run`` when given), newest first; safe to call again."""
    load_handlers()
    ledger = Ledger(directory)
    steps: list[RollbackStep] = []
    for entry in reversed(ledger.read().open(run=run)):
        if dry_run:
            steps.append(RollbackStep(entry, f"would undo {entry.describe()}"))
            continue
        try:
            steps.append(RollbackStep(entry, ledger.undo(entry)))
        except Exception as exc:
            logger.error("chaosmem: could not undo %s: %s", entry.describe(), exc)
            steps.append(RollbackStep(entry, None, f"{type(exc).__name__}: {exc}"))
    return steps
