"""The replayer's hot path, compiled: the same Python modules built into C by mypyc, when fresh.

Why: a replay's cost is a few microseconds of Python per request on top of the kernel's own
work (one ``write`` and one ``read``), and that Python decides how close a replay comes to wrk.
mypyc compiles the typed modules of :data:`MODULES` as they are (no second source to keep in
step); measured on this project's 2-core machine it cuts the replayer's CPU per request by about
a third (``bench/replay_throughput.py``, which prints which engine ran).

How it stays safe:

* The build (``chaosmem native``, run by ``make setup``) writes the extension
  modules into ``chaosmem/traffic/_native/`` (never beside the sources) with a manifest of the
  SHA-256 of each source, the interpreter's cache tag and the mypy version that built them.
* :func:`activate` (called when ``chaosmem.traffic`` is imported) puts that directory first on
  the package's ``__path__`` only when every source still hashes as built: edit ``replay.py``
  and the interpreted code runs until the next build, never a stale binary. All the modules come
  from one place or the other (compiled modules call each other directly).
* ``CHAOSMEM_NATIVE=0`` turns it off; without a C compiler or mypy the build says why and the
  interpreted modules run as before (slower, same results: the tests run both).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["MODULES", "NATIVE_DIR", "activate", "active", "build", "status"]

HERE = Path(__file__).resolve().parent
#: the modules compiled together (one shared library, ``chaosmem.traffic._engine__mypyc``)
MODULES = ("histogram", "schedule", "replay")
NATIVE_DIR = HERE / "_native"
_PACKAGE_DIR = NATIVE_DIR / "chaosmem" / "traffic"
_GROUP = "chaosmem.traffic._engine"
#: set to "0" to run the interpreted modules even when a fresh build exists
ENV = "CHAOSMEM_NATIVE"


def _expected(here: Path) -> dict[str, Any]:
    return {
        "cache_tag": sys.implementation.cache_tag,
        "sources": {
            name: hashlib.sha256((here / f"{name}.py").read_bytes()).hexdigest() for name in MODULES
        },
    }


def status(here: Path = HERE) -> tuple[bool, str]:
    """(usable, why): whether a fresh build of the :data:`MODULES` of the package directory
    ``here`` exists for this interpreter."""
    if os.environ.get(ENV, "").strip() == "0":
        return False, f"{ENV}=0"
    manifest_path = here / "_native" / "manifest.json"
    package_dir = here / "_native" / "chaosmem" / "traffic"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False, "not built (run `chaosmem native`)"
    except (OSError, ValueError) as exc:
        return False, f"unreadable manifest {manifest_path}: {exc}"
    expected = _expected(here)
    if not isinstance(manifest, dict) or manifest.get("cache_tag") != expected["cache_tag"]:
        return False, f"built for another interpreter than {expected['cache_tag']}"
    stale = [
        name
        for name, digest in expected["sources"].items()
        if (manifest.get("sources") or {}).get(name) != digest
    ]
    if stale:
        return False, f"stale: {', '.join(stale)} changed since the build"
    files = manifest.get("files")
    if (
        not isinstance(files, list)
        or not files
        or not all(
            isinstance(f, str) and "/" not in f and (package_dir / f).is_file() for f in files
        )
    ):
        return False, f"incomplete build in {package_dir}"
    return True, f"compiled by mypy {manifest.get('mypy', '?')}"


def activate(package_path: list[str]) -> bool:
    """Put the compiled modules first on ``chaosmem.traffic``'s ``__path__`` when they are fresh.

    Must run before any of :data:`MODULES` is imported (the package's ``__init__`` calls it).
    """
    usable, _why = status()
    if usable and str(_PACKAGE_DIR) not in package_path:
        package_path.insert(0, str(_PACKAGE_DIR))
    return usable


def active() -> bool:
    """Whether the replay engine running in this process is the compiled one."""
    from chaosmem.traffic.replay import ENGINE

    return ENGINE == "compiled"


_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
paths, group, target = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
setup(
    name="chaosmem-native",
    ext_modules=mypycify(paths, group_name=group, target_dir=target, opt_level="3"),
    script_args=["build_ext", "--build-lib", sys.argv[4], "--build-temp", target],
)
"""


def build(*, quiet: bool = True) -> tuple[bool, str]:
    """Compile :data:`MODULES` into :data:`NATIVE_DIR`; (built, what happened).

    Runs mypyc in a child process from the project's root (so mypy reads its configuration)
    and swaps the new build in only when it is complete.
    """
    try:
        import mypy.version
    except ImportError:
        return False, "mypy (which brings mypyc) is not installed: pip install 'chaosmem[native]'"
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        return False, "no C compiler (cc/gcc) on PATH: install the Debian package gcc"
    root = HERE.parents[1]
    expected = _expected(HERE)
    with tempfile.TemporaryDirectory(prefix="chaosmem-native-") as tmp:
        out = Path(tmp) / "lib"
        paths = ",".join(f"chaosmem/traffic/{name}.py" for name in MODULES)
        result = subprocess.run(
            [sys.executable, "-c", _SETUP, paths, _GROUP, str(Path(tmp) / "build"), str(out)],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            return False, "mypyc failed:\n" + "\n".join(tail)
        built = out / "chaosmem" / "traffic"
        files = sorted(p.name for p in built.glob("*.so"))
        if len(files) != len(MODULES) + 1:
            return False, f"mypyc built {files}, expected {len(MODULES) + 1} extension modules"
        if _expected(HERE) != expected:
            return False, "the sources changed during the build; run it again"
        # NB: staged under a name of this build's own, then swapped in: two builds at once
        # (two shells running make setup) never mix their files
        staging = NATIVE_DIR.with_name(f"_native.new.{os.getpid()}")
        (staging / "chaosmem").mkdir(parents=True)
        try:
            shutil.copytree(built, staging / "chaosmem" / "traffic")
            manifest = {**expected, "files": files, "mypy": mypy.version.__version__}
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            shutil.rmtree(NATIVE_DIR, ignore_errors=True)
            try:
                staging.rename(NATIVE_DIR)
            except OSError:
                return False, "another build finished first; run `chaosmem native --check`"
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not quiet:
        print(result.stdout[-2000:])
    return True, f"compiled {', '.join(MODULES)} into {NATIVE_DIR}"
