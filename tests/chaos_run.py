"""Run a real ``chaos run`` on an experiment written by a test, and return its journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CHAOS = Path(sys.executable).with_name("chaos")
ROOT = Path(__file__).resolve().parent.parent


def chaos_run(
    directory: Path,
    name: str,
    experiment: dict[str, Any],
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> tuple[int, Path]:
    """``chaos run`` as CI would call it (``extra``: more ``run`` options); returns its exit
    code and the journal path."""
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.json"
    source.write_text(json.dumps(experiment, indent=2))
    journal = directory / f"{name}.journal.json"
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    done = subprocess.run(
        [
            str(CHAOS),
            "--no-version-check",
            "--no-log-file",
            "--settings",
            str(directory / "none.yaml"),
            "run",
            *(extra or []),
            "--journal-path",
            str(journal),
            str(source),
        ],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert journal.exists(), done.stdout + done.stderr
    return done.returncode, journal


def exists_probe(name: str, path: str, tolerance: bool = True) -> dict[str, Any]:
    return {
        "type": "probe",
        "name": name,
        "tolerance": tolerance,
        "provider": {
            "type": "python",
            "module": "os.path",
            "func": "exists",
            "arguments": {"path": path},
        },
    }


def process_action(name: str, path: str, arguments: list[str] | str) -> dict[str, Any]:
    return {
        "type": "action",
        "name": name,
        "provider": {"type": "process", "path": path, "arguments": arguments},
    }
