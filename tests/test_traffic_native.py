"""The compiled replay engine (chaosmem/traffic/native.py): used only when fresh, same results.

``make test`` builds it (``make native``) before the tests run, so the rest of the suite drives
the compiled engine; here the interpreted one replays the same capture and must agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from chaosmem.traffic import native
from tests.traffic_fixtures import write_timed_gor
from tests.traffic_server import RecordingServer

ROOT = Path(__file__).resolve().parents[1]
HANG = 120  # s: a guard against a hang (subprocess.TimeoutExpired names the command), not a timing


def _engine_in_child(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "from chaosmem.traffic.replay import ENGINE; print(ENGINE)"],
        capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, **env},
        timeout=HANG,
    )  # fmt: skip
    return result.stdout.strip()


def test_this_checkout_runs_the_compiled_engine() -> None:
    usable, why = native.status()
    assert usable, f"make native should have built the engine: {why}"
    assert _engine_in_child() == "compiled"
    assert _engine_in_child(CHAOSMEM_NATIVE="0") == "interpreted"


def _copy_package(into: Path) -> Path:
    """The compiled modules' sources and their build, as a package directory of their own."""
    for name in native.MODULES:
        shutil.copy(native.HERE / f"{name}.py", into / f"{name}.py")
    shutil.copytree(native.NATIVE_DIR, into / "_native")
    return into


def test_a_changed_source_is_never_run_compiled(tmp_path: Path) -> None:
    here = _copy_package(tmp_path)
    assert native.status(here)[0]
    source = here / "replay.py"
    source.write_text(source.read_text() + "\n# edited\n")
    assert native.status(here) == (False, "stale: replay changed since the build")
    source.write_text(source.read_text().removesuffix("\n# edited\n"))
    assert native.status(here)[0]


def test_a_damaged_build_is_not_used(tmp_path: Path) -> None:
    here = _copy_package(tmp_path)
    manifest_path = here / "_native" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    library = here / "_native" / "chaosmem" / "traffic" / manifest["files"][0]
    library.rename(library.with_suffix(".gone"))
    usable, why = native.status(here)
    assert not usable and why.startswith("incomplete build")
    library.with_suffix(".gone").rename(library)
    manifest_path.write_text(json.dumps({**manifest, "cache_tag": "cpython-399"}))
    assert native.status(here) == (False, "built for another interpreter than cpython-311")
    manifest_path.write_text(json.dumps({**manifest, "files": ["../../../etc/passwd"]}))
    assert not native.status(here)[0]
    manifest_path.write_text("{not json")
    usable, why = native.status(here)
    assert not usable and why.startswith("unreadable manifest")
    manifest_path.unlink()
    assert native.status(here) == (False, "not built (run `chaosmem native`)")


def _replay(capture: Path, url: str, state: Path, **env: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "chaosmem.cli", "replay", str(capture), "--target", url,
         "--rate", "2000", "--workers", "1", "--state-dir", str(state), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, **env},
        timeout=HANG,
    )  # fmt: skip
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def test_compiled_and_interpreted_engines_send_and_count_the_same(tmp_path: Path) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=500, span_s=1.0)
    results = {}
    for mode in ("1", "0"):
        with RecordingServer() as server:
            summary = _replay(capture, server.url, tmp_path / f"state{mode}", CHAOSMEM_NATIVE=mode)
            arrived = sorted(a.target for a in server.arrived)
        results[summary["engine"]] = (arrived, summary)
    assert set(results) == {"compiled", "interpreted"}
    (arrived_c, compiled), (arrived_i, interpreted) = results["compiled"], results["interpreted"]
    assert arrived_c == arrived_i and len(arrived_c) == 500
    for key in ("sent", "completed", "status", "errors", "unsent_due"):
        assert compiled[key] == interpreted[key], key
    assert compiled["completed"] == 500
