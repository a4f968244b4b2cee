"""Where chaosmem keeps what must survive a crash: the ledger, replay results, timelines.

``configuration["chaosmem_state_dir"]``, else ``$CHAOSMEM_STATE_DIR``, else
``~/.local/state/chaosmem``. One experiment run, its stressors and a later ``chaosmem rollback``
must all agree on it, which is why the environment variable exists: child processes inherit it.

The state dir is ours alone: what is in it decides which processes rollback signals and which
limits it writes. So an existing one that another user owns, or that group or others can write,
is refused (anyone who can write it could plant a ledger entry or a symlink); folders are
created 0700 and files 0600, and files are opened without following symlinks
(:func:`open_private`), so a planted link cannot redirect a write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from chaosmem.errors import ChaosmemError, InvalidArgument

__all__ = [
    "check_private",
    "open_private",
    "private_dir",
    "read_private",
    "replace_private",
    "state_dir",
]

STATE_DIR_KEY = "chaosmem_state_dir"
STATE_DIR_ENV = "CHAOSMEM_STATE_DIR"
_MODES = {
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
}


def check_private(path: Path, *, name: str = STATE_DIR_KEY) -> None:
    """Refuse a directory that is not this user's alone (owner, and no group/other write)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InvalidArgument(
            name, str(path), f"a directory chaosmem can use ({exc.strerror})"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidArgument(name, str(path), "a directory (this is a file)")
    uid = os.geteuid()
    if info.st_uid != uid:
        raise InvalidArgument(
            name,
            str(path),
            f"a directory owned by this user (uid {uid}; it is owned by uid {info.st_uid}): "
            f"choose another state dir, or `chown {uid} {path}`",
        )
    if info.st_mode & 0o022:
        raise InvalidArgument(
            name,
            str(path),
            f"a directory only its owner can write (its mode is {stat.filemode(info.st_mode)}, "
            f"so others could plant ledger entries or symlinks): `chmod go-w {path}`",
        )


def private_dir(path: Path) -> Path:
    """``path`` and any missing parent, each created 0700 (``mkdir(parents=True)`` would make
    the parents 0755)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    return path


def open_private(
    path: Path, mode: str = "a", *, encoding: str | None = None, buffering: int = -1
) -> IO[Any]:
    """Open a state file for writing: created 0600, never through a symlink (``O_NOFOLLOW``).

    ``mode`` is ``"a"``/``"w"`` (text, give ``encoding``) or ``"ab"``/``"wb"``.
    """
    flags = _MODES[mode.rstrip("b")] | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ChaosmemError(
                f"{path} is a symlink; chaosmem does not write through links in its state dir "
                "(remove it)"
            ) from None
        raise
    return os.fdopen(fd, mode, buffering=buffering, encoding=encoding)


def read_private(path: Path, *, limit: int = 64 << 20) -> str:
    """A state file's text (at most ``limit`` bytes), never through a symlink.

    Raises ``FileNotFoundError`` when it does not exist, :class:`ChaosmemError` when it is a
    symlink (a planted link must not make a probe read, and report, another file).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ChaosmemError(f"{path} is a symlink; chaosmem does not read through it") from None
        raise
    with os.fdopen(fd, "rb") as stream:
        return stream.read(limit).decode("utf-8", errors="replace")


def replace_private(path: Path, data: str | bytes) -> None:
    """Atomically replace ``path`` with ``data`` (0600): readers in other processes see the old
    file or the new one, never half of one.

    The temporary file sits beside ``path`` under a name no other writer uses, is created
    exclusively and without following a symlink, and is removed when anything fails.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def state_dir(configuration: Mapping[str, Any] | None = None, *, create: bool = True) -> Path:
    """The state directory for this run, created (mode 0700) unless ``create`` is false.

    An existing one is refused unless it is this user's alone (see the module's docstring).
    """
    configured = (configuration or {}).get(STATE_DIR_KEY)
    if configured is not None and (not isinstance(configured, str) or not configured.strip()):
        raise InvalidArgument(STATE_DIR_KEY, configured, "a directory path")
    raw = configured or os.environ.get(STATE_DIR_ENV) or "~/.local/state/chaosmem"
    path = Path(raw).expanduser().absolute()
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise InvalidArgument(
                STATE_DIR_KEY, str(path), f"a directory chaosmem can create ({exc.strerror})"
            ) from None
    check_private(path)
    return path
