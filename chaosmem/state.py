"""Where chaosmem keeps what must survive a crash: the ledger, replay results, timelines.

``configuration["chaosmem_state_dir"]``, else ``$CHAOSMEM_STATE_DIR``, else
``~/.local/state/chaosmem``. One experiment run, its stressors and a later ``chaosmem rollback``
must all agree on it, which is why the environment variable exists: child processes inherit it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaosmem.errors import InvalidArgument

__all__ = ["state_dir"]

STATE_DIR_KEY = "chaosmem_state_dir"
STATE_DIR_ENV = "CHAOSMEM_STATE_DIR"


def state_dir(configuration: Mapping[str, Any] | None = None, *, create: bool = True) -> Path:
    """The state directory for this run, created (mode 0700) unless ``create`` is false."""
    configured = (configuration or {}).get(STATE_DIR_KEY)
    if configured is not None and (not isinstance(configured, str) or not configured.strip()):
        raise InvalidArgument(STATE_DIR_KEY, configured, "a directory path")
    raw = configured or os.environ.get(STATE_DIR_ENV) or "~/.local/state/chaosmem"
    path = Path(raw).expanduser().absolute()
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InvalidArgument(
                STATE_DIR_KEY, str(path), f"a directory chaosmem can create ({exc.strerror})"
            ) from None
    return path
