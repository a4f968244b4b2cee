"""A Chaos Toolkit control module for tests: it only registers a timeline source that misbehaves
once the file ``$TEARDOWN_SOURCE_TRIGGER`` exists, the way a source making HTTP calls could at
the end of a run. ``$TEARDOWN_SOURCE_MODE``: ``hang`` (never returns), ``exit`` (raises
SystemExit, which no ``except Exception`` catches) or ``raise-close`` (its ``close()`` raises).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from chaosmem.timeline.sources import Source, SourceSetup, register_source


class Misbehaving:
    key = "misbehaving"

    def __init__(self) -> None:
        self.mode = os.environ.get("TEARDOWN_SOURCE_MODE", "")
        self.trigger = os.environ.get("TEARDOWN_SOURCE_TRIGGER", "/nonexistent")

    def sample(self) -> Any:
        if not os.path.exists(self.trigger):
            return {"ok": True}
        if self.mode == "hang":
            threading.Event().wait()
        if self.mode == "exit":
            raise SystemExit("the source gave up")
        return {"ok": True}

    def close(self) -> None:
        if self.mode == "raise-close" and os.path.exists(self.trigger):
            raise OSError(28, "No space left on device")


@register_source("misbehaving")
def _misbehaving(setup: SourceSetup) -> Source | None:
    return Misbehaving()
