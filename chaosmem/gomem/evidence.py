"""Evidence before the kill: the Go service's heap and goroutine profiles, kept with the run.

No anchor captures a heap profile on the way to an OOM kill; by the time someone looks, the
process that knew where its memory went is gone. :func:`capture` fetches
``/debug/pprof/heap`` and ``/debug/pprof/goroutine?debug=2`` into the run's ``evidence/``
folder and, when ``go`` is on the PATH, summarises the heap with ``go tool pprof -top`` (top
allocation sites by in-use bytes). Sizes are bounded (64 MiB per profile); file names are ours.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from chaosmem.state import private_dir, replace_private

__all__ = ["capture", "pprof_top"]

MAX_PROFILE = 64 << 20
TOP_LINES = 10


def _get(url: str, timeout: float) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        data: bytes = response.read(MAX_PROFILE + 1)
    if len(data) > MAX_PROFILE:
        raise ValueError(f"{url}: profile larger than {MAX_PROFILE} bytes")
    return data


def pprof_top(profile: Path, *, timeout: float = 60.0) -> list[dict[str, Any]] | None:
    """The top in-use allocation sites of a heap profile through ``go tool pprof -top``, or None
    when Go is not installed (the raw profile is still kept)."""
    go = shutil.which("go")
    if go is None:
        return None
    out = subprocess.run(
        [go, "tool", "pprof", "-top", "-sample_index=inuse_space", str(profile)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        return None
    rows: list[dict[str, Any]] = []
    started = False
    for line in out.stdout.splitlines():
        if line.strip().startswith("flat"):
            started = True
            continue
        parts = line.split()
        if not started or len(parts) < 6:
            continue
        rows.append(
            {
                "flat": parts[0],
                "flat_percent": parts[1],
                "cum": parts[3],
                "function": " ".join(parts[5:]),
            }
        )
        if len(rows) >= TOP_LINES:
            break
    return rows


def capture(
    pprof_base: str, directory: Path, *, reason: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Fetch the profiles into ``directory`` now; returns what was kept (errors included)."""
    private_dir(directory)
    stamp = f"{time.strftime('%H%M%S')}-{reason}"
    record: dict[str, Any] = {"t": time.time(), "reason": reason}
    try:
        heap = directory / f"{stamp}-heap.pb.gz"
        replace_private(heap, _get(f"{pprof_base}/heap", timeout))
        record["heap_profile"] = str(heap)
        top = pprof_top(heap)
        if top is not None:
            record["top"] = top
    except (urllib.error.URLError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        record["heap_error"] = f"{type(exc).__name__}: {exc}"
    try:
        text = _get(f"{pprof_base}/goroutine?debug=2", timeout)
        goroutines = directory / f"{stamp}-goroutine.txt"
        replace_private(goroutines, text)
        record["goroutine_dump"] = str(goroutines)
        record["goroutines"] = sum(
            1 for line in text.splitlines() if line.startswith(b"goroutine ")
        )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        record["goroutine_error"] = f"{type(exc).__name__}: {exc}"
    return record
