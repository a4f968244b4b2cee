"""The restore ledger: every change chaosmem makes, written down before it is made.

Why a ledger and not Chaos Toolkit's rollbacks alone: ``chaos run`` skips rollbacks when it is
interrupted, and nothing runs at all when it is SIGKILLed or the machine reboots. So each change
(a tightened limit, a started service, a stressor, a replay, a patched pod) is appended here and
fsynced *before* it touches the target, together with what undoes it. ``chaosmem rollback`` and
the control replay the open entries backwards; undo handlers are idempotent, so an entry whose
change never happened (a crash between record and apply) is undone harmlessly.

The file is JSON lines, append-only, guarded by ``flock`` so that several processes (the
experiment, its stressors, a rollback) can share it. A line that cannot be read (a crash
mid-write, bytes from elsewhere) is skipped and counted, never silently: ``chaosmem rollback``
says how many and exits non-zero, because such a line may have been an entry. The ledger is
opened without following symlinks, and a ledger that is a directory or unreadable is a clear
error.
"""

from __future__ import annotations

import errno
import fcntl
import inspect
import json
import math
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError

__all__ = [
    "Entry",
    "Ledger",
    "LedgerRead",
    "current_run",
    "parse_ledger",
    "register_undo",
    "set_current_run",
    "undo_handler",
]

LEDGER_FILE = "ledger.jsonl"
RUN_ENV = "CHAOSMEM_RUN_ID"

#: An undo handler gets the entry and the run's configuration (a cluster backend needs it to
#: reach the API with the run's kubeconfig and context); it returns what it did, in words.
UndoHandler = Callable[["Entry", Mapping[str, Any] | None], str]
_UNDO: dict[str, UndoHandler] = {}


def register_undo(kind: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Declare the function that undoes entries of ``kind``.

    It takes ``(entry, configuration)``; a handler written as ``(entry)`` alone is accepted too
    (the local backend's undos need no configuration).
    """

    def wrap(handler: Callable[..., str]) -> Callable[..., str]:
        positional = [
            p
            for p in inspect.signature(handler).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if len(positional) >= 2:
            _UNDO[kind] = handler
        else:
            _UNDO[kind] = lambda entry, configuration: handler(entry)
        return handler

    return wrap


def undo_handler(kind: str) -> UndoHandler | None:
    return _UNDO.get(kind)


def current_run() -> str | None:
    """The run this process works for: set by the control, inherited by child processes."""
    return os.environ.get(RUN_ENV) or None


def set_current_run(run: str | None) -> None:
    if run:
        os.environ[RUN_ENV] = run
    else:
        os.environ.pop(RUN_ENV, None)


@dataclass(frozen=True)
class Entry:
    """One change: what it touched (``target``), how to undo it (``undo``), and whether it is open."""

    id: str
    kind: str
    target: dict[str, Any]
    undo: dict[str, Any]
    run: str | None
    at: float
    pid: int
    closed: bool = False
    outcome: str | None = None
    closed_at: float | None = None

    def describe(self) -> str:
        return f"{self.kind} on {json.dumps(self.target, sort_keys=True)}"


@dataclass
class LedgerRead:
    """The entries of a ledger file in the order they were recorded, and how many lines were torn."""

    entries: list[Entry] = field(default_factory=list)
    torn: list[int] = field(default_factory=list)

    def open(self, *, run: str | None = None, kind: str | None = None) -> list[Entry]:
        return [
            e
            for e in self.entries
            if not e.closed and (run is None or e.run == run) and (kind is None or e.kind == kind)
        ]


#: A ledger line is a few hundred bytes; anything far longer is not ours.
MAX_LINE = 1 << 20


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise ValueError(value)
    return value


def _moment(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    moment = float(value)
    if not math.isfinite(moment) or not 0 <= moment < 1e11:
        raise ValueError(value)
    return moment


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(value)
    return value


def _open_entry(record: dict[str, Any]) -> Entry:
    pid = record["pid"]
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 1 << 31:
        raise ValueError(pid)
    run = record.get("run")
    return Entry(
        id=_text(record["id"]),
        kind=_text(record["kind"]),
        target=_object(record["target"]),
        undo=_object(record["undo"]),
        run=_text(run) if run else None,
        at=_moment(record["at"]),
        pid=pid,
    )


def parse_ledger(text: str) -> LedgerRead:
    """Fold the ledger's lines into entries: an ``open`` line creates one, a ``close`` line ends it.

    Lines that are not JSON objects of the expected shape (a crash mid-write, a hand edit,
    garbage) are skipped and their line numbers reported in ``torn``: whatever the bytes (huge
    or non-finite numbers, deep nesting, megabytes on one line), never an exception.
    """
    result = LedgerRead()
    index: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if len(line) > MAX_LINE:
                raise ValueError("line too long")
            record = _object(json.loads(line))
            op = record["op"]
            if op == "open":
                entry = _open_entry(record)
                index[entry.id] = len(result.entries)
                result.entries.append(entry)
            elif op == "close" and isinstance(record["id"], str) and record["id"] in index:
                pos = index[record["id"]]
                old = result.entries[pos]
                result.entries[pos] = Entry(
                    **{
                        **old.__dict__,
                        "closed": True,
                        "outcome": str(record["outcome"])[:256],
                        "closed_at": _moment(record["at"]),
                    }
                )
            else:
                raise ValueError(op)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            result.torn.append(number)
    return result


class Ledger:
    """The ledger file of one state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LEDGER_FILE

    def _open(self, flags: int) -> int:
        """The ledger's fd, never through a symlink; a clear error for what is not a file."""
        try:
            fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            what = {
                errno.ELOOP: "is a symlink (chaosmem does not follow links in its state dir)",
                errno.EISDIR: "is a directory, not a ledger file",
                errno.EACCES: "cannot be opened by this user",
            }.get(exc.errno or 0, f"cannot be opened ({exc.strerror})")
            raise ChaosmemError(
                f"the ledger {self.path} {what}; move it aside and run "
                "`chaosmem rollback --sweep` to find what it recorded"
            ) from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            what = "is a directory, not a ledger file" if stat.S_ISDIR(mode) else "is not a file"
            raise ChaosmemError(f"the ledger {self.path} {what}; move it aside")
        return fd

    @contextmanager
    def _locked(self) -> Iterator[int]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = self._open(os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._locked() as fd:
            # NB: a previous writer may have died mid-line; start ours on a line of its own.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)

    def record(self, *, kind: str, target: Mapping[str, Any], undo: Mapping[str, Any]) -> Entry:
        """Write down a change before making it; returns the open entry."""
        if kind not in _UNDO:
            raise ChaosmemError(f"internal: no undo handler is registered for ledger kind {kind!r}")
        entry = Entry(
            id=uuid.uuid4().hex,
            kind=kind,
            target=dict(target),
            undo=dict(undo),
            run=current_run(),
            at=time.time(),
            pid=os.getpid(),
        )
        self._append(
            {
                "op": "open",
                **{
                    k: v
                    for k, v in entry.__dict__.items()
                    if k not in {"closed", "outcome", "closed_at"}
                },
            }
        )
        return entry

    def close(self, entry: Entry | str, outcome: str) -> None:
        """Mark an entry done (``restored``, ``not-applied``, ``stopped`` ...)."""
        entry_id = entry.id if isinstance(entry, Entry) else entry
        self._append({"op": "close", "id": entry_id, "outcome": outcome, "at": time.time()})

    def read(self) -> LedgerRead:
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            return LedgerRead()
        with os.fdopen(fd, "rb") as stream:
            try:
                raw = stream.read()
            except OSError as exc:
                raise ChaosmemError(
                    f"the ledger {self.path} cannot be read ({exc.strerror})"
                ) from None
        return parse_ledger(raw.decode("utf-8", errors="replace"))

    def undo(self, entry: Entry, configuration: Mapping[str, Any] | None = None) -> str:
        """Run the entry's undo handler and close it; returns what was done, in words."""
        handler = _UNDO.get(entry.kind)
        if handler is None:
            raise ChaosmemError(
                f"ledger entry {entry.id} has kind {entry.kind!r}, which this chaosmem cannot undo; "
                "upgrade chaosmem or undo it by hand"
            )
        done = handler(entry, configuration)
        self.close(entry, "restored")
        return done
