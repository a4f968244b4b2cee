"""A control that cannot start says why at error level, without --verbose, and stops the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.chaos_run import ROOT, exists_probe

CHAOS = str(Path(sys.executable).parent / "chaos")


def test_unwritable_state_dir_is_an_error_not_a_debug_line(tmp_path: Path) -> None:
    experiment = {
        "title": "a run whose state dir cannot exist",
        "description": "the control must refuse it loudly",
        "configuration": {"chaosmem_state_dir": "/proc/self/nope"},
        "controls": [
            {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
        ],
        "method": [exists_probe("look", str(tmp_path))],
    }
    source = tmp_path / "e.json"
    source.write_text(json.dumps(experiment))
    journal = tmp_path / "journal.json"
    done = subprocess.run(
        [CHAOS, "--no-log-file", "run", "--journal-path", str(journal), str(source)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert any(
        "chaosmem: the control could not start" in line and "/proc/self/nope" in line
        for line in errors
    ), output
    assert done.returncode != 0
    assert json.loads(journal.read_text())["status"] == "interrupted"
