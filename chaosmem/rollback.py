"""Undo what the ledger says is still changed: the engine behind ``chaosmem rollback`` and the control.

Entries are undone newest first, so a limit tightened twice comes back to its first value and a
stressor is stopped before the limit it was pushing against is relaxed. A failing undo is
reported and the rest still run: one stuck entry must not keep every other target tight.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmem.ledger import Entry, Ledger, undo_handler
from chaosmem.targets import BACKENDS

__all__ = ["HANDLER_MODULES", "RollbackStep", "load_handlers", "rollback"]

logger = logging.getLogger("chaostoolkit")

#: Modules that register undo handlers with :func:`chaosmem.ledger.register_undo`: each
#: backend's (from the backend table), then the concerns that work on any backend.
HANDLER_MODULES = (
    *(module for backend in BACKENDS for module in backend.handler_modules),
    "chaosmem.stress.stopping",
    "chaosmem.traffic.background",
    "chaosmem.traffic.kubejob",
)
_FAILED: dict[str, str] = {}


@dataclass(frozen=True)
class RollbackStep:
    entry: Entry
    done: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def load_handlers(kinds: Collection[str] | None = None) -> dict[str, str]:
    """Import the handler modules (only until every one of ``kinds`` has a handler, when
    given); returns the ones that could not load, with why.

    Guarded: one backend's missing dependency (no ``kubernetes`` client) must not stop the
    other backends' entries from being undone. Entries whose handler did not load fail alone,
    with the import error in their message. NB: ``kinds`` spares a local rollback the
    kubernetes client's import (a second here, a minute under qemu TCG).
    """
    for name in HANDLER_MODULES:
        if kinds is not None and all(undo_handler(kind) is not None for kind in kinds):
            break
        if name in _FAILED:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            _FAILED[name] = f"{type(exc).__name__}: {exc}"
            logger.error("chaosmem: undo handlers of %s cannot load: %s", name, exc)
    return dict(_FAILED)


def _why_unknown(entry: Entry, failed: Mapping[str, str]) -> str:
    if failed:
        reasons = "; ".join(f"{m}: {why}" for m, why in failed.items())
        return (
            f"cannot undo ledger kind {entry.kind!r}: handler modules failed to load "
            f"({reasons}); fix that and run chaosmem rollback again"
        )
    return (
        f"this chaosmem cannot undo ledger kind {entry.kind!r}; upgrade chaosmem or undo it by hand"
    )


def rollback(
    directory: Path,
    *,
    run: str | None = None,
    dry_run: bool = False,
    configuration: Mapping[str, Any] | None = None,
) -> list[RollbackStep]:
    """Undo every open entry (of ``run`` when given), newest first; safe to call again.

    ``configuration`` is the run's (handlers that talk to a cluster read their client settings
    from it); ``chaosmem rollback`` passes none and the environment's settings apply.
    """
    ledger = Ledger(directory)
    entries = ledger.read().open(run=run)
    failed = load_handlers({e.kind for e in entries})
    steps: list[RollbackStep] = []
    for entry in reversed(entries):
        if dry_run:
            steps.append(RollbackStep(entry, f"would undo {entry.describe()}"))
            continue
        if undo_handler(entry.kind) is None:
            error = _why_unknown(entry, failed)
            logger.error("chaosmem: could not undo %s: %s", entry.describe(), error)
            steps.append(RollbackStep(entry, None, error))
            continue
        try:
            steps.append(RollbackStep(entry, ledger.undo(entry, configuration)))
        except Exception as exc:
            logger.error("chaosmem: could not undo %s: %s", entry.describe(), exc)
            steps.append(RollbackStep(entry, None, f"{type(exc).__name__}: {exc}"))
    return steps
