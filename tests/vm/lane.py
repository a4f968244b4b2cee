"""The cgroup v2 lane: run the kernel-facing tests on a real cgroup v2 kernel under qemu.

This host's memory controller is bound to cgroup v1, so a real v2 kernel comes from Debian's own
kernel package, booted under qemu (TCG: KVM does not work on these machines). Nothing is
installed on the host but qemu, busybox-static and cpio (``make deps``); the kernel package is
fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into ``.cache/vm/<package>/``,
which keeps only the kernel and an initramfs (busybox, the virtio 9p modules, ``init.sh``).

The guest mounts the host root read-only over 9p, puts tmpfs on its ``/run``, mounts ``cgroup2``
on ``/sys/fs/cgroup``, chroots into the host root and runs the job this script writes into a
second, writable 9p share (``.cache/vm/runs/<id>/``): pytest from this checkout, with ``TMPDIR``
on the tmpfs, no bytecode and no cache written. The job starts the way a CI runner's job does on
a systemd host: in a non-root cgroup (``/ci.slice/runner.service``) that holds processes, with
no chaosmem configuration. Its output streams over the serial console; its exit code comes back
in the share's ``rc`` file.

Usage: ``python tests/vm/lane.py [PYTEST ARGS...]`` (default: the ``kernel`` tests). Exits with the
guest pytest's exit code, or 3 when the VM did not report one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CACHE = Path(os.environ.get("CHAOSMEM_VM_CACHE", REPO / ".cache" / "vm"))
INIT = Path(__file__).resolve().parent / "init.sh"
#: The 9p stack, in the order the modules depend on each other.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
)
BUSYBOX = Path("/bin/busybox")
#: The whole run's ceiling: a hung guest must not hang `make test`.
TIMEOUT = float(os.environ.get("CHAOSMEM_VM_TIMEOUT", "1200"))


def kernel_test_files() -> list[str]:
    """The test files that hold ``kernel`` tests: collecting only them saves a minute under TCG."""
    tests = REPO / "tests"
    return sorted(
        str(p.relative_to(REPO)) for p in tests.glob("test_*.py") if "mark.kernel" in p.read_text()
    )


@dataclass(frozen=True)
class Assets:
    kernel: Path
    initrd: Path
    package: str


def _log(message: str) -> None:
    print(f"vm-lane: {message}", flush=True)


def kernel_package() -> str | None:
    """The versioned kernel package ``linux-image-amd64`` depends on (None when apt cannot say)."""
    try:
        out = subprocess.run(
            ["apt-cache", "depends", "linux-image-amd64"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in out.splitlines():
        kind, _, name = line.strip().partition(": ")
        if kind == "Depends" and name.startswith("linux-image-"):
            return name
    return None


def _cached_packages() -> list[Path]:
    return sorted(
        (p for p in CACHE.glob("linux-image-*") if (p / "vmlinuz").is_file()),
        key=lambda p: p.stat().st_mtime,
    )


def _unpack_kernel(package: str, into: Path) -> None:
    """Download ``package`` and keep its vmlinuz and the 9p modules (not installed on the host)."""
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="download-") as tmp:
        work = Path(tmp)
        _log(f"downloading {package}")
        subprocess.run(["apt-get", "download", "-q", package], cwd=work, check=True)
        deb = next(work.glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
        vmlinuz = next((work / "root" / "boot").glob("vmlinuz-*"))
        modules = into / "modules"
        modules.mkdir(exist_ok=True)
        for name in MODULES:
            found = next((work / "root" / "lib" / "modules").rglob(f"{name}.ko"), None)
            if found is None:
                raise SystemExit(f"vm-lane: {package} has no module {name}.ko")
            shutil.copy(found, modules / f"{name}.ko")
        shutil.copy(vmlinuz, into / "vmlinuz.part")
        (into / "vmlinuz.part").rename(into / "vmlinuz")


def _build_initrd(kernel_dir: Path, initrd: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="initrd-") as tmp:
        root = Path(tmp)
        for sub in ("bin", "lib/modules", "proc", "sys", "dev"):
            (root / sub).mkdir(parents=True)
        shutil.copy(BUSYBOX, root / "bin" / "busybox")
        shutil.copy(INIT, root / "init")
        (root / "init").chmod(0o755)
        for module in (kernel_dir / "modules").iterdir():
            shutil.copy(module, root / "lib" / "modules" / module.name)
        names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
        archive = subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc"],
            cwd=root,
            input=names,
            capture_output=True,
            check=True,
        ).stdout
        part = initrd.with_suffix(".part")
        part.write_bytes(
            subprocess.run(["gzip", "-1"], input=archive, capture_output=True, check=True).stdout
        )
        part.rename(initrd)


def ensure_assets() -> Assets:
    """The kernel and initramfs, from the cache or built into it."""
    missing = [
        p
        for p in ("/usr/bin/qemu-system-x86_64", str(BUSYBOX), "/usr/bin/cpio")
        if not Path(p).exists()
    ]
    if missing:
        raise SystemExit(f"vm-lane: missing {', '.join(missing)}; run `make deps`")
    CACHE.mkdir(parents=True, exist_ok=True)
    package = kernel_package()
    if package is None and not _cached_packages():  # a fresh machine without apt lists
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        package = kernel_package()
    if package is None:
        cached = _cached_packages()
        if not cached:
            raise SystemExit("vm-lane: apt-cache cannot name the kernel package and none is cached")
        package = cached[-1].name
    kernel_dir = CACHE / package
    if not (kernel_dir / "vmlinuz").is_file():
        _unpack_kernel(package, kernel_dir)
    for stale in _cached_packages():  # an older kernel Debian has since replaced
        if stale != kernel_dir:
            shutil.rmtree(stale, ignore_errors=True)
    digest = hashlib.sha256(INIT.read_bytes() + BUSYBOX.read_bytes()).hexdigest()[:12]
    initrd = kernel_dir / f"initrd-{digest}.gz"
    if not initrd.is_file():
        for old in kernel_dir.glob("initrd-*.gz"):
            old.unlink()
        _build_initrd(kernel_dir, initrd)
    return Assets(kernel_dir / "vmlinuz", initrd, package)


JOB = """\
# Written by tests/vm/lane.py; run by the guest's init inside the chroot of the host root.
set -e
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export TMPDIR=/run/tmp HOME=/run/home PYTHONDONTWRITEBYTECODE=1
export HYPOTHESIS_STORAGE_DIRECTORY=/run/tmp/hypothesis  # the checkout is read-only here
mkdir -p "$HOME"
unset CHAOSMEM_STATE_DIR CHAOSMEM_MOUNTINFO CHAOSMEM_RUN_ID
# Where a CI runner's job runs on a systemd host: a leaf cgroup holding processes, inside a
# slice with the memory controller delegated to it. chaosmem gets no configuration at all.
cg=/sys/fs/cgroup
echo "+memory +pids" > $cg/cgroup.subtree_control
mkdir -p $cg/ci.slice/runner.service
echo "+memory +pids" > $cg/ci.slice/cgroup.subtree_control
echo $$ > $cg/ci.slice/runner.service/cgroup.procs
echo "vm-job: in cgroup $(cut -d: -f3 /proc/self/cgroup) on $(uname -r)"
cd {repo}
set +e
{python} -m pytest -p no:cacheprovider --junitxml=/run/results/junit.xml {args}
rc=$?
echo "vm-job: pytest exit code $rc"
exit $rc
"""


def _overdue(qemu: subprocess.Popen[bytes]) -> None:
    _log(f"the guest did not finish within {TIMEOUT:.0f}s; ending qemu (pid {qemu.pid})")
    qemu.kill()


def _die_with_parent() -> None:
    """In qemu's child between fork and exec: SIGKILL it when this script dies, however."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def boot(assets: Assets, pytest_args: list[str]) -> int:
    """Boot the guest with a job that runs pytest; returns pytest's exit code (3 if unknown)."""
    runs = CACHE / "runs"
    runs.mkdir(exist_ok=True)
    for old in runs.iterdir():  # keep the last few runs' results, no more
        if time.time() - old.stat().st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)
    results = runs / uuid.uuid4().hex[:12]
    results.mkdir()
    (results / "job.sh").write_text(
        JOB.format(
            repo=shlex.quote(str(REPO)),
            python=shlex.quote(sys.executable),
            args=" ".join(shlex.quote(a) for a in pytest_args),
        )
    )
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-smp",
        "2",
        "-m",
        "3072",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        str(assets.kernel),
        "-initrd",
        str(assets.initrd),
        "-append",
        "console=ttyS0 quiet panic=-1",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={results},mount_tag=results,security_model=none,multidevs=remap",
    ]
    _log(f"booting {assets.package} (results in {results})")
    started = time.monotonic()
    qemu = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=_die_with_parent
    )
    booted: float | None = None
    watchdog = threading.Timer(TIMEOUT, _overdue, args=(qemu,))
    watchdog.start()
    try:
        assert qemu.stdout is not None
        seen = b""
        while chunk := qemu.stdout.read1(65536):  # type: ignore[attr-defined]
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            if booted is None:
                seen = (seen + chunk)[-4096:]
                if b"vm-init: up" in seen:
                    booted = time.monotonic() - started
    finally:
        watchdog.cancel()
        if qemu.poll() is None:  # an interrupt: never leave the VM behind
            qemu.kill()
        qemu.wait()
    if booted is not None:
        _log(f"qemu start to the guest's init up: {booted:.1f}s")
    elapsed = time.monotonic() - started
    rc_file = results / "rc"
    if not rc_file.is_file():
        _log(f"the guest reported no exit code after {elapsed:.1f}s")
        return 3
    rc = int(rc_file.read_text().strip() or 3)
    _log(
        f"guest pytest exit code {rc}, VM wall time {elapsed:.1f}s; junit: {results / 'junit.xml'}"
    )
    return rc


def main(argv: list[str]) -> int:
    # NB: SIGTERM (e.g. a CI job cancelled) ends this script through `finally`, so qemu goes too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    assets = ensure_assets()
    _log(f"assets ready in {time.monotonic() - started:.1f}s")
    return boot(assets, argv or ["-m", "kernel", "-v", "--durations=10", *kernel_test_files()])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
