"""The allocation stressor: one process that grows its resident memory at a set rate, holds it,
and lets it go.

Why this file stands alone (standard library only, no chaosmem imports): it runs by path as
``python3 -I -S engine.py ...``. Importing the chaosmem package would pull in chaoslib and the
kubernetes client, about 55 MiB that would be charged to the target before the first planned
byte; a bare interpreter costs about 9 MiB. It also lets the kubernetes backend copy this one
file into a pod. It knows nothing about cgroups: whoever starts it decides where it runs, and so
who pays for its pages.

How it allocates, and why:

* Each block is its own anonymous ``mmap`` followed by one ``PROT_NONE`` guard page, so every
  block is a separate mapping in ``/proc/PID/maps`` (adjacent anonymous mappings would otherwise
  merge) and freeing one leaves a real hole in the address space.
* All blocks are mapped up front with ``MAP_NORESERVE``; untouched pages cost nothing. The ramp
  then writes every byte (``memset``) in small steps paced against a monotonic clock: the goal
  at time t is ``rate * t``, so a late wake-up catches up and the slope stays linear.
  ``memset`` takes real page faults, exactly like a program would, so under a cgroup limit the
  kernel reclaims and OOM-kills the way it would for the service.
* ``MADV_NOHUGEPAGE``: a touched byte charges one page, never 2 MiB, so the slope is smooth.
* Holding blocks in ``poll`` on the parent pipe and a signal wake-up pipe: no CPU is burnt.

Progress goes two ways: a JSON status file replaced a few times per second (for people and the
timeline), and an 8-byte counter in a shared file mapping (``<id>.progress``) updated after every
MiB without a system call, so what was reached is known to the MiB even when the kernel
OOM-kills the engine between two status writes.

It ends itself on SIGTERM/SIGINT/SIGHUP, when the parent pipe reaches EOF (the process that
started it is gone, however it died), and at ``--deadline`` seconds after it started.
Exit codes: 0 completed, 2 bad arguments, 3 stopped by a signal, 4 parent gone, 5 deadline.

The block plan (``fragmentation``): a share ``f`` of the bytes goes to small blocks, the rest to
large ones, interleaved as the ramp goes so the running share stays at ``f``: runs of small
blocks between large ones. ``release="fragmented"`` frees every other block of each size (the
odd ones, counted within each size), which leaves small holes between the small blocks that are
kept: a fragmented heap.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import mmap
import os
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EXIT_DEADLINE",
    "EXIT_DONE",
    "EXIT_PARENT_GONE",
    "EXIT_STOPPED",
    "LARGE_BLOCK",
    "MAX_BLOCKS",
    "PAGE",
    "SMALL_BLOCK",
    "BlockPlan",
    "main",
    "plan_blocks",
]

PAGE = mmap.PAGESIZE
SMALL_BLOCK = 64 << 10
LARGE_BLOCK = 8 << 20
#: Each block is two mappings (block + guard); Linux allows 65530 mappings per process by default.
MAX_BLOCKS = 16384
EXIT_DONE, EXIT_USAGE, EXIT_STOPPED, EXIT_PARENT_GONE, EXIT_DEADLINE = 0, 2, 3, 4, 5
RELEASES = ("all", "fragmented")

_MAX_SECONDS = 1e10  # holds and deadlines beyond this are typos (over 300 years)
_MAX_POLL_MS = 3_600_000  # poll() takes a C int: wake at least hourly, then wait again
_RAMP_STEP = 0.01  # seconds between pacing steps
_CHUNK = 1 << 20  # bytes written between two updates of the progress counter
_RAMP_REPORT = 0.1  # seconds between status writes while ramping
_HOLD_REPORT = 0.5  # ... and while holding
_MADV_NOHUGEPAGE = getattr(mmap, "MADV_NOHUGEPAGE", 15)
_MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_PROT_NONE = 0


def _open_private(path: str) -> Any:
    """A state file for writing: 0600, never through a symlink (chaosmem.state's rule, here
    without importing chaosmem)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


@dataclass(frozen=True)
class BlockPlan:
    """The blocks the engine maps, in ramp order: ``(length, small)`` pairs."""

    size: int
    fragmentation: float
    small_block: int
    large_block: int
    blocks: tuple[tuple[int, bool], ...]

    @property
    def small_bytes(self) -> int:
        return sum(length for length, small in self.blocks if small)

    @property
    def large_bytes(self) -> int:
        return self.size - self.small_bytes

    def summary(self) -> dict[str, Any]:
        """What the status file and the action report about the plan."""
        small = [length for length, is_small in self.blocks if is_small]
        return {
            "size": self.size,
            "fragmentation": self.fragmentation,
            "small_block": self.small_block,
            "large_block": self.large_block,
            "blocks": len(self.blocks),
            "small_blocks": len(small),
            "large_blocks": len(self.blocks) - len(small),
            "small_bytes": self.small_bytes,
            "large_bytes": self.large_bytes,
            "small_share": round(self.small_bytes / self.size, 6) if self.size else 0.0,
        }

    def fragmented_release(self) -> list[int]:
        """Indexes of the blocks a fragmented release frees: every other one of each size."""
        seen = {True: 0, False: 0}
        freed = []
        for index, (_, small) in enumerate(self.blocks):
            if seen[small] % 2 == 1:
                freed.append(index)
            seen[small] += 1
        return freed


def plan_blocks(
    size: int,
    *,
    fragmentation: float,
    small_block: int = SMALL_BLOCK,
    large_block: int = LARGE_BLOCK,
    max_blocks: int = MAX_BLOCKS,
) -> BlockPlan:
    """Split ``size`` (rounded up to pages) into small and large blocks.

    The small blocks get ``f * size`` bytes (to the page) and the large ones the rest; each
    class's last block is cut to fit. The two are interleaved by Bresenham's rule (the next block
    is of the class that is behind its own total), so at every point of the ramp the mix is
    within one block of ``f`` and it is exact at the end. When the plan would need more than
    ``max_blocks`` blocks, block sizes double until it fits (a huge size at high fragmentation
    would otherwise exhaust the process's mappings).
    """
    if not 0.0 <= fragmentation <= 1.0:
        raise ValueError(f"fragmentation {fragmentation!r} is not within 0.0-1.0")
    if size < 0:
        raise ValueError(f"size {size!r} is negative")
    size = _round_up(size, PAGE)
    small_block = _round_up(max(small_block, PAGE), PAGE)
    large_block = max(_round_up(large_block, PAGE), small_block)
    small_total = min(size, _round_up(round(fragmentation * size), PAGE))
    large_total = size - small_total
    while -(-small_total // small_block) + -(-large_total // large_block) > max_blocks:
        # NB: double the class with more blocks; small blocks never outgrow large ones.
        if -(-small_total // small_block) >= -(-large_total // large_block):
            small_block *= 2
            large_block = max(large_block, small_block)
        else:
            large_block *= 2
    blocks: list[tuple[int, bool]] = []
    small_done = large_done = 0
    while small_done < small_total or large_done < large_total:
        small = large_done >= large_total or (
            small_done < small_total and small_done * large_total <= large_done * small_total
        )
        if small:
            length = min(small_block, small_total - small_done)
            small_done += length
        else:
            length = min(large_block, large_total - large_done)
            large_done += length
        blocks.append((length, small))
    return BlockPlan(size, fragmentation, small_block, large_block, tuple(blocks))


class _Libc:
    """The four libc calls Python's ``mmap`` module does not give: guard pages need mprotect, and
    holes need munmap of a part of what was mapped."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.mmap = libc.mmap
        self.mmap.restype = ctypes.c_void_p
        self.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        self.munmap = libc.munmap
        self.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.mprotect = libc.mprotect
        self.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.madvise = libc.madvise
        self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def map_block(self, length: int) -> int:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        address = self.mmap(None, length + PAGE, mmap.PROT_READ | mmap.PROT_WRITE, flags, -1, 0)
        if address is None or address == ctypes.c_void_p(-1).value:
            raise OSError(
                ctypes.get_errno(),
                f"mmap of {length} bytes failed: {os.strerror(ctypes.get_errno())}",
            )
        self.mprotect(address + length, PAGE, _PROT_NONE)
        self.madvise(address, length, _MADV_NOHUGEPAGE)  # best effort: older kernels say EINVAL
        return int(address)

    def unmap_block(self, address: int, length: int) -> None:
        self.munmap(address, length + PAGE)


class _Stop(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Engine:
    """The stressor's state: its plan, its mapped blocks, how far the ramp got, and its status."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = plan_blocks(
            args.size,
            fragmentation=args.fragmentation,
            small_block=args.small_block,
            large_block=args.large_block,
        )
        self.meta: dict[str, Any] = json.loads(args.meta) if args.meta else {}
        self.progress: mmap.mmap | None = None
        if args.status:
            fd = os.open(
                args.status.removesuffix(".json") + ".progress",
                os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                0o600,
            )
            try:
                os.ftruncate(fd, 8)
                self.progress = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
        self.libc = _Libc()
        self.addresses: list[int] = []
        self.freed: set[int] = set()
        self.touched = 0  # bytes written, in ramp order
        self.block = 0  # the block the ramp is in
        self.offset = 0  # bytes of that block already written
        self.phase = "ramp"
        self.started = time.time()
        self.clock0 = time.monotonic()
        self.deadline = self.clock0 + args.deadline if args.deadline > 0 else None
        self.last_report = 0.0
        self.stop_signal: int | None = None
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_read = wake_read
        signal.set_wakeup_fd(wake_write)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.poller = select.poll()
        self.poller.register(self.wake_read, select.POLLIN)
        if args.parent_fd >= 0:
            self.poller.register(args.parent_fd, select.POLLIN | select.POLLHUP)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_signal = signum

    # -- status ----------------------------------------------------------------------------

    @property
    def held(self) -> int:
        freed = sum(self.plan.blocks[i][0] for i in self.freed)
        return self.touched - freed

    def report(self, *, force: bool = False, **extra: Any) -> None:
        """Atomically replace the status file (readers never see half a file)."""
        now = time.monotonic()
        every = _RAMP_REPORT if self.phase == "ramp" else _HOLD_REPORT
        if not force and now - self.last_report < every:
            return
        self.last_report = now
        if not self.args.status:
            return
        status = {
            **self.meta,
            "id": self.args.id,
            "pid": os.getpid(),
            "bytes": self.held,
            "touched": self.touched,
            "size": self.plan.size,
            "rate": self.args.rate or None,
            "phase": self.phase,
            "t": time.time(),
            "started": self.started,
            "elapsed": round(now - self.clock0, 3),
            "release": self.args.release,
            "plan": self.plan.summary(),
            **extra,
        }
        tmp = f"{self.args.status}.{os.getpid()}.tmp"
        with _open_private(tmp) as out:
            json.dump(status, out)
        os.replace(tmp, self.args.status)

    def write_blocks(self) -> None:
        """Where each block is mapped, so a reader can check the plan against /proc/PID/maps."""
        if not self.args.status:
            return
        path = self.args.status.removesuffix(".json") + ".blocks.jsonl"
        tmp = f"{path}.{os.getpid()}.tmp"
        with _open_private(tmp) as out:
            out.write(
                json.dumps({"id": self.args.id, "pid": os.getpid(), "page": PAGE, "guard": PAGE})
                + "\n"
            )
            for address, (length, small) in zip(self.addresses, self.plan.blocks, strict=True):
                out.write(json.dumps([address, length, "small" if small else "large"]) + "\n")
        os.replace(tmp, path)

    # -- waiting ---------------------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (never past the deadline), waking at once for a signal or the
        parent's end; raises :class:`_Stop` when it is time to go."""
        if self.deadline is not None:
            seconds = min(seconds, self.deadline - time.monotonic())
        timeout = max(0, min(int(seconds * 1000 + 0.999), _MAX_POLL_MS))
        for fd, _ in self.poller.poll(timeout):
            if fd == self.wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_read, 64)
            elif fd == self.args.parent_fd:
                try:
                    data = os.read(fd, 64)
                except OSError:
                    data = b""
                if not data:
                    raise _Stop(EXIT_PARENT_GONE, "parent-gone")
        self.check()

    def check(self) -> None:
        if self.stop_signal is not None:
            raise _Stop(EXIT_STOPPED, f"signal-{signal.Signals(self.stop_signal).name}")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _Stop(EXIT_DEADLINE, "deadline")

    # -- the phases ------------------------------------------------------------------------

    def map_all(self) -> None:
        for length, _ in self.plan.blocks:
            self.addresses.append(self.libc.map_block(length))
        self.write_blocks()

    def touch_to(self, goal: int) -> None:
        """Write every byte up to ``goal`` (page-rounded), block after block."""
        goal = min(_round_up(goal, PAGE), self.plan.size)
        while self.touched < goal:
            length = self.plan.blocks[self.block][0]
            n = min(length - self.offset, goal - self.touched, _CHUNK)
            ctypes.memset(self.addresses[self.block] + self.offset, 0x5A, n)
            self.touched += n
            if self.progress is not None:
                self.progress[:8] = struct.pack("<Q", self.touched)
            self.offset += n
            if self.offset == length:
                self.block += 1
                self.offset = 0

    def ramp(self) -> None:
        rate = self.args.rate
        if rate <= 0:
            while self.touched < self.plan.size:
                self.touch_to(self.touched + 16 * _CHUNK)
                self.report()
                self.wait(0)  # a stop or the parent's end still counts between chunks
            return
        step = max(_RAMP_STEP, PAGE / rate)
        start = time.monotonic()
        while self.touched < self.plan.size:
            self.touch_to(int(rate * (time.monotonic() - start)))
            self.report()
            if self.touched < self.plan.size:
                self.wait(step)
        self.meta["ramp_seconds"] = round(time.monotonic() - start, 3)

    def hold(self, seconds: float | None) -> None:
        until = None if seconds is None else time.monotonic() + seconds
        while until is None or time.monotonic() < until:
            self.report()
            left = _HOLD_REPORT if until is None else min(_HOLD_REPORT, until - time.monotonic())
            self.wait(max(left, 0.0))

    def release(self) -> None:
        self.phase = "release"
        self.report(force=True)
        indexes = (
            self.plan.fragmented_release()
            if self.args.release == "fragmented"
            else range(len(self.addresses))
        )
        for index in indexes:
            self.libc.unmap_block(self.addresses[index], self.plan.blocks[index][0])
            self.freed.add(index)
        self.report(force=True)

    def run(self) -> int:
        self.report(force=True)
        try:
            self.check()
            self.map_all()
            self.ramp()
            self.phase = "hold"
            self.report(force=True)
            self.hold(None if self.args.hold < 0 else self.args.hold)
            self.release()
            if self.args.release == "fragmented":
                self.hold(None)  # keep the rest until stopped, the parent goes, or the deadline
            code, reason = EXIT_DONE, "completed"
        except _Stop as stop:
            code, reason = stop.code, stop.reason
        self.phase = "done"
        # NB: bytes 0: the exit that follows gives everything back (readers sum "bytes").
        self.report(force=True, reason=reason, reached=self.touched, held_at_end=self.held, bytes=0)
        return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaosmem-stress-engine", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--id", required=True, help="the stressor id (also how chaosmem finds it again)"
    )
    parser.add_argument("--size", type=int, required=True, help="bytes to allocate")
    parser.add_argument("--rate", type=float, default=0.0, help="bytes per second (0: all at once)")
    parser.add_argument(
        "--fragmentation", type=float, default=0.0, help="share of bytes in small blocks, 0-1"
    )
    parser.add_argument(
        "--hold", type=float, default=-1.0, help="seconds to hold (negative: until stopped)"
    )
    parser.add_argument("--release", choices=RELEASES, default="all")
    parser.add_argument(
        "--deadline", type=float, default=0.0, help="end after this many seconds (0: no deadline)"
    )
    parser.add_argument(
        "--status", default="", help="status file to replace a few times per second"
    )
    parser.add_argument(
        "--parent-fd", type=int, default=-1, help="read end of a pipe: EOF means the parent is gone"
    )
    parser.add_argument("--meta", default="", help="a JSON object copied into every status")
    parser.add_argument("--small-block", type=int, default=SMALL_BLOCK)
    parser.add_argument("--large-block", type=int, default=LARGE_BLOCK)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # NB: bounded and finite before any arithmetic: 1e-300 B/s or an infinite hold would make
    # poll() timeouts overflow (chaosmem's parsers already refuse them; this runs by hand too).
    if (
        not 0 <= args.size < 1 << 63
        or not 0.0 <= args.fragmentation <= 1.0
        or not (args.rate == 0 or 0.001 <= args.rate < 2.0**63)
        or not (args.hold < 0 or args.hold <= _MAX_SECONDS)
        or not 0.0 <= args.deadline <= _MAX_SECONDS
    ):
        print(
            "chaosmem-stress-engine: size within 0-2**63, fragmentation within 0-1, rate 0 or "
            f"0.001-2**63 bytes/s, hold and deadline finite (at most {_MAX_SECONDS:g}s)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return Engine(args).run()
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            print(f"chaosmem-stress-engine: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
