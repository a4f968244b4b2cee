"""Where a stressor reports its progress, and how the parent side reads and amends it.

``STATE/stress/<id>.json`` is replaced atomically a few times per second by the engine (the
timeline reads its ``"bytes"`` for the stressors the ledger records for the run). The supervisor
writes it too, but only when the engine cannot: right after the spawn (so the pid is there at
once) and after the kernel OOM-killed it (``"phase": "killed"``). Block addresses go to
``<id>.blocks.jsonl``, the exact progress counter to ``<id>.progress`` and the engine's output
to ``<id>.log``; none of them matches ``*.json``.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import time
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError
from chaosmem.state import private_dir, read_private, replace_private
from chaosmem.validate import check_name

__all__ = [
    "PHASES",
    "blocks_path",
    "log_path",
    "progress_path",
    "read_blocks",
    "read_bounded_status",
    "read_progress",
    "read_status",
    "status_path",
    "stress_dir",
    "update_status",
]

PHASES = ("ramp", "hold", "release", "done", "killed")


def stress_dir(directory: Path) -> Path:
    return private_dir(directory / "stress")


def status_path(directory: Path, stressor_id: str) -> Path:
    return stress_dir(directory) / f"{check_name(stressor_id, name='stressor id')}.json"


def blocks_path(status: Path) -> Path:
    return status.with_name(status.name.removesuffix(".json") + ".blocks.jsonl")


def progress_path(status: Path) -> Path:
    return status.with_name(status.name.removesuffix(".json") + ".progress")


def read_progress(status: Path) -> int:
    """The bytes the engine had written, to the MiB, from its shared counter (0 when none)."""
    try:
        data = progress_path(status).read_bytes()
    except OSError:
        return 0
    return struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else 0


def log_path(status: Path) -> Path:
    return status.with_name(status.name.removesuffix(".json") + ".log")


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status, or None when there is none yet (or it cannot be read)."""
    try:
        data = json.loads(read_private(path, limit=1 << 20))
    except (OSError, ValueError, ChaosmemError):
        return None
    return data if isinstance(data, dict) else None


#: A status file is a few hundred bytes; anything this large is not one.
_STATUS_MAX = 1 << 20


def _refuse_constant(text: str) -> float:
    raise ValueError(f"non-finite number {text}")


def read_bounded_status(path: Path) -> dict[str, Any] | None:
    """The status file as an object, for readers that trust nothing in it (probes, timeline):
    opened without following a symlink, bounded in size; None when it is missing, not a regular
    file, too large or not a JSON object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _STATUS_MAX:
            return None
        data = os.read(fd, _STATUS_MAX + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def update_status(path: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the status and replace it atomically; ``t`` becomes now."""
    status = {**(read_status(path) or {}), **fields, "t": time.time()}
    replace_private(path, json.dumps(status, default=str))
    return status


def read_blocks(status: Path) -> list[tuple[int, int, str]]:
    """The engine's blocks as ``(address, length, "small"|"large")``, in ramp order."""
    lines = blocks_path(status).read_text(encoding="utf-8").splitlines()
    return [(int(a), int(n), str(k)) for a, n, k in (json.loads(line) for line in lines[1:])]
