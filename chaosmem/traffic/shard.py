"""Every core: one replay split across worker processes that share one schedule clock.

Why processes: one event loop on one core tops out well below what a loopback service (or
wrk) does; the GIL rules out threads. Each worker process maps the same compiled schedule
(:mod:`chaosmem.traffic.compile`), keeps its shard of it (a session's requests all go to one
worker, in order; requests without a session go round-robin) and runs its own
:class:`~chaosmem.traffic.replay.Replayer` with its own connections.

How they agree on time: each worker starts, maps the schedule and says ``ready`` on its
stdout; when all are ready this process picks a start time a moment ahead and writes it to
each worker's stdin. Every worker converts that unix time to its own monotonic clock, so the
n-th request of the whole schedule is due at the same instant whichever worker sends it.

How results stay one replay: each worker writes ``shards/<n>/summary.json``, ``seconds.jsonl``
(with its lag buckets) and ``requests.bin``; this process merges them, while they run and at
the end, into the replay's own files, the ones probes, timelines and reports read. One replay
id, one summary, one ledger entry (the background replay's, if any).

Nothing outlives the replay: workers get SIGTERM when this process (thread) dies
(``PR_SET_PDEATHSIG``); a SIGTERM or Ctrl-C here stops them, as any blocking activity is
stopped (:func:`chaosmem.interrupts.stop_on_signals`: the signal is noted for the chaosmem
control, and handed on to the handler that was in place once the merged summary is written);
they are ended like every process chaosmem starts (:func:`chaosmem.lifecycle.end_processes`:
SIGTERM, then SIGKILL after a grace period, each pid checked against its ``/proc`` cmdline).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from chaosmem.errors import ChaosmemError
from chaosmem.interrupts import StopRequest, stop_on_signals
from chaosmem.lifecycle import alive, child_env, end_processes
from chaosmem.state import open_private
from chaosmem.traffic.compile import Compiled
from chaosmem.traffic.options import ReplayOptions
from chaosmem.traffic.results import (
    merge_seconds,
    merge_summaries,
    write_json_atomic,
)

__all__ = ["SHARD_MODULE", "ShardMerger", "run_sharded", "split_concurrency"]

SHARD_MODULE = "chaosmem.traffic.shard_worker"
#: How long workers have to start and map the schedule: a hang guard, not a speed target (a
#: loaded 2-core build machine was seen to need more than 30 s to start two interpreters).
READY_TIMEOUT = 120.0
#: Between "all ready" and the first scheduled send: time to hand the start time to each worker.
START_MARGIN = 0.05
GRACE = 5.0


def split_concurrency(concurrency: int, workers: int) -> list[int]:
    """``concurrency`` connections shared by ``workers`` (each gets at least one)."""
    return [
        max(1, concurrency // workers + (1 if n < concurrency % workers else 0))
        for n in range(workers)
    ]


class ShardMerger:
    """Merges shards' files into the replay's own: ``seconds.jsonl`` as each second completes
    in every shard, ``summary.json`` each time it is called, ``requests.bin`` at the end."""

    def __init__(self, out: Path, shard_dirs: list[Path], base: dict[str, Any]) -> None:
        self.out = out
        self.dirs = shard_dirs
        self.base = base
        self._offsets = [0] * len(shard_dirs)
        self._pending: list[list[dict[str, Any]]] = [[] for _ in shard_dirs]
        self.seconds_written = 0

    def _read_lines(self, n: int) -> None:
        try:
            with (self.dirs[n] / "seconds.jsonl").open("rb") as stream:
                stream.seek(self._offsets[n])
                chunk = stream.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offsets[n] += len(complete)
        for raw in complete.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                self._pending[n].append(line)

    def summaries(self) -> list[dict[str, Any]]:
        parts = []
        for directory in self.dirs:
            try:
                data = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                parts.append(data)
        return parts

    def update(
        self, ended: list[bool], *, final: bool = False, write: bool = True
    ) -> dict[str, Any]:
        """Merge what the shards wrote so far; ``ended[n]``: shard n wrote all it will write.

        ``write=False`` leaves ``summary.json`` to the caller, who changes the merged summary
        first (readers in other processes must not see a state it is about to correct)."""
        for n in range(len(self.dirs)):
            self._read_lines(n)
        merged_lines = []
        while any(self._pending):
            if not final and not all(
                pending or done for pending, done in zip(self._pending, ended, strict=True)
            ):
                break  # a running shard has not finished this second yet
            lines = [pending.pop(0) for pending in self._pending if pending]
            merged_lines.append(merge_seconds(lines))
        if merged_lines:
            with (self.out / "seconds.jsonl").open("a", encoding="utf-8") as stream:
                for line in merged_lines:
                    stream.write(json.dumps(line, sort_keys=True) + "\n")
            self.seconds_written += len(merged_lines)
        summary = merge_summaries(self.summaries(), base=self.base)
        if write:
            write_json_atomic(self.out / "summary.json", summary)
        self.last_lines = merged_lines
        return summary

    def join_requests(self) -> None:
        with (self.out / "requests.bin").open("ab") as into:
            for directory in self.dirs:
                with (
                    contextlib.suppress(FileNotFoundError),
                    (directory / "requests.bin").open("rb") as part,
                ):
                    shutil.copyfileobj(part, into, 1 << 20)


def _spawn(directory: Path, secrets: dict[str, Any]) -> subprocess.Popen[bytes]:
    with open_private(directory / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", SHARD_MODULE, str(directory), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=child_env(),
            # NB: a Ctrl-C meant for us is passed on as SIGTERM, once, by us
            start_new_session=True,
        )
    # NB: credential headers and a URL password go down the pipe (first line), never to disk
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(json.dumps(secrets).encode() + b"\n")
        proc.stdin.flush()
    return proc


def _is_worker(argv: list[str], *, directory: Path) -> bool:
    """Whether ``argv`` is the worker :func:`_spawn` started for ``directory``."""
    return argv[1:4] == ["-m", SHARD_MODULE, str(directory)]


def _end(procs: list[subprocess.Popen[bytes]], dirs: list[Path], grace: float) -> None:
    """End the workers still running: SIGTERM, SIGKILL after ``grace``; then reap them all."""

    def live() -> list[int]:
        # NB: a reaped child has a returncode and its pid may be someone else's by now; one not
        # yet reaped is still our child (its pid cannot be reused), a zombie counts as ended.
        return [
            proc.pid
            for proc, directory in zip(procs, dirs, strict=False)
            if proc.returncode is None
            and alive(proc.pid, identity=functools.partial(_is_worker, directory=directory))
        ]

    end_processes(live, grace=grace)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # NB: stdin may hold an unsent start time
                    pipe.close()


def _log_tail(directory: Path) -> str:
    try:
        return (directory / "worker.log").read_text(encoding="utf-8", errors="replace")[-1500:]
    except OSError:
        return ""


def _await_ready(procs: list[subprocess.Popen[bytes]], dirs: list[Path], stop: StopRequest) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    waiting = {proc.stdout.fileno(): n for n, proc in enumerate(procs) if proc.stdout is not None}
    while waiting and not stop.requested:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChaosmemError(
                f"replay worker(s) {sorted(waiting.values())} did not start within "
                f"{READY_TIMEOUT:g}s: {_log_tail(dirs[next(iter(waiting.values()))])}"
            )
        readable, _, _ = select.select(list(waiting), [], [], min(left, 0.1))
        for fd in readable:
            n = waiting.pop(fd)
            line = os.read(fd, 64)
            if not line.startswith(b"ready"):
                raise ChaosmemError(
                    f"replay worker {n} failed to start (see {dirs[n] / 'worker.log'}): "
                    f"{_log_tail(dirs[n]).strip()}"
                )


def run_sharded(
    options: ReplayOptions,
    compiled: Compiled,
    *,
    out: Path,
    replay_id: str,
    workers: int,
    progress: IO[str] | None = None,
) -> dict[str, Any]:
    """Replay ``compiled`` with ``workers`` processes; the merged summary once all have ended.

    SIGTERM or SIGINT (when this is the main thread) stops the workers gracefully; once the
    merged summary is written (``"state": "stopped"``) the signal goes on to the handler that
    was in place before (``KeyboardInterrupt`` for SIGINT, Chaos Toolkit's interrupt for
    SIGTERM), as in :func:`chaosmem.traffic.replay.run_engine`.
    """
    dirs = [out / "shards" / str(n) for n in range(workers)]
    spec = options.public_spec()
    for n, (directory, conns) in enumerate(
        zip(dirs, split_concurrency(options.concurrency, workers), strict=True)
    ):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json_atomic(
            directory / "spec.json",
            {
                "options": {**spec, "concurrency": conns, "workers": 1},
                "compiled": str(compiled.directory),
                "replay_id": replay_id,
                "shard": n,
                "shards": workers,
            },
        )
    base = {
        "replay_id": replay_id,
        "pid": os.getpid(),
        "target_url": spec["target_url"],
        "options": spec,
        "workers": workers,
        "started_at": time.time(),
        "filtered": compiled.filtered,
        "capture": compiled.stats.as_dict(),
    }
    with contextlib.suppress(ImportError):
        from chaosmem.ledger import current_run

        base["run"] = current_run()
    merger = ShardMerger(out, dirs, base)
    procs: list[subprocess.Popen[bytes]] = []
    stop = StopRequest()
    # NB: the merged summary is final before the signal is handed on (``KeyboardInterrupt``,
    # Chaos Toolkit's interrupt), so everything up to it happens inside the block.
    with stop_on_signals(stop.set, work="replay_traffic"):
        try:
            try:
                for directory in dirs:
                    procs.append(_spawn(directory, options.secret_spec()))
                _await_ready(procs, dirs, stop)
            except (OSError, ChaosmemError) as exc:
                _end(procs, dirs, 1.0)
                raise ChaosmemError(f"could not start the replay workers: {exc}") from None
            if not stop.requested:
                _start(procs, base)
                _follow(procs, dirs, merger, stop, progress)
        finally:
            # NB: also when a second signal was handed on at once (the owner raised here)
            _end(procs, dirs, GRACE)
            summary = merger.update([True] * workers, final=True)
            merger.join_requests()
        failed = [n for n, proc in enumerate(procs) if proc.returncode not in (0, -signal.SIGTERM)]
        if failed and summary["state"] != "failed":
            summary["state"] = "failed"
            summary["error"] = "; ".join(
                f"worker {n} exited with {procs[n].returncode}: {_log_tail(dirs[n]).strip()[-300:]}"
                for n in failed
            )
            write_json_atomic(out / "summary.json", summary)
        elif stop.requested and summary["state"] == "running":
            summary["state"] = "stopped"  # stopped before any worker had started to write
            write_json_atomic(out / "summary.json", summary)
    return summary


def _start(procs: list[subprocess.Popen[bytes]], base: dict[str, Any]) -> None:
    """Hand every worker the start time: a moment ahead, the same unix time for all."""
    start_at = time.time() + START_MARGIN
    base["started_at"] = start_at
    for proc in procs:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(f"{start_at!r}\n".encode())
            proc.stdin.close()


def _follow(
    procs: list[subprocess.Popen[bytes]],
    dirs: list[Path],
    merger: ShardMerger,
    stop: StopRequest,
    progress: IO[str] | None,
) -> None:
    """Merge the workers' results while they run, until all have ended or a stop is asked
    for (then end them: each writes its last summary on SIGTERM)."""
    ended = [False] * len(procs)
    merger.update(ended)
    while not all(ended):
        if stop.wait(0.25):
            _end(procs, dirs, GRACE)
        ended = [proc.poll() is not None for proc in procs]
        merger.update(ended)
        if progress is not None:
            _show_progress(progress, merger)


def _show_progress(stream: IO[str], merger: ShardMerger) -> None:
    for line in getattr(merger, "last_lines", []):
        stream.write(
            f"\r\x1b[K{line['elapsed']:7.1f}s  {line['sent']:,} req/s  "
            f"lag p99 {line['lag_p99_ms']} ms  status {line['status']}  errors {line['errors']}"
        )
        stream.flush()
