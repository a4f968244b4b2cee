"""Parse once, send many: a capture compiled into an on-disk schedule the workers memory-map.

Why: parsing a capture (goreplay separators, HTTP request lines, HAR JSON) and rewriting each
request (Host, header set/remove, filters) cost more CPU than sending it; done on the replay's
hot path it halved the send rate. So a capture is compiled once, before the clock starts, into
two files, and every worker (a process per core, or a pod) only reads bytes and writes them::

    CACHE/<key>/index.bin   one RECORD per request, in schedule order
    CACHE/<key>/wire.bin    each request exactly as it goes on the wire, back to back
    CACHE/<key>/meta.json   how many requests, the capture statistics, what was filtered out

``<key>`` is a hash of the capture files' *contents* and of the options that change the bytes
(target host and path prefix, headers set and removed, method and path filters, the format,
the session key): the same capture replayed again, at any speed or rate, compiles only once;
an edited capture or another target compiles anew. Timing options (``speed``, ``rate``,
``loop``) are applied while sending: the index keeps the recorded time.

Memory stays bounded for a capture of any size: requests stream from the reader to the two
files (written through a buffer), and the workers ``mmap`` them, so the kernel's page cache
holds the capture, not the replayer's heap. A capture larger than memory replays with a flat
RSS: pages already sent are clean and the kernel drops them.

A file's content hash is remembered under ``CACHE/hashes`` by the file's identity (device,
inode, size, modification time), so a 10 GB capture is read once to hash it, not before every
replay; a file changed since has another identity and is hashed again.

The cache lives in the state dir (``STATE/cache/schedules``), written to a temporary directory
and renamed into place, so two replays compiling the same capture at once never see half a
schedule; only the :data:`KEEP` most recently used schedules are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmem.state import open_private, replace_private
from chaosmem.traffic.capture import CapturedRequest, CaptureStats, Malformed, read_capture
from chaosmem.traffic.options import DROPPED_HEADERS, ReplayOptions

__all__ = [
    "RECORD",
    "Compiled",
    "Rewriter",
    "compile_capture",
    "open_compiled",
    "session_of",
    "shard_of",
]

#: recorded time (ns after the first request, never going backwards), offset and length of the
#: request in ``wire.bin``, session hash (0: none), flags (1: HEAD). 25 bytes, little-endian.
RECORD = struct.Struct("<qQIIB")
FLAG_HEAD = 1
#: Bump when the layout or the rewriting changes: old cache entries are then never read.
VERSION = "chaosmem-schedule-1"
KEEP = 4
KEEP_HASHES = 256
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_KEY = re.compile(r"[0-9a-f]{64}")
_WRITE_BUFFER = 1 << 20


class Rewriter:
    """A captured request -> the bytes sent to the target, or None when the filters drop it.

    Every request goes to ``target_url``: the recorded Host is replaced (the recorded host and
    scheme are never dialled), hop-by-hop headers are dropped, ``Content-Length`` is recomputed
    from the body (chunked bodies were de-chunked by the parser), then ``headers`` are set and
    ``remove_headers`` removed.
    """

    def __init__(self, options: ReplayOptions) -> None:
        self._methods = frozenset(m.encode() for m in options.methods) if options.methods else None
        self._pattern = re.compile(options.path_pattern) if options.path_pattern else None
        removed = {h.lower() for h in options.remove_headers}
        self._drop = DROPPED_HEADERS | removed | {h.lower() for h in dict(options.set_headers)}
        host = options.host_header.encode("idna" if not options.host_header.isascii() else "ascii")
        self._host_line = b"Host: " + host + b"\r\n"
        self._extra = b"".join(
            f"{k}: {v}\r\n".encode("latin-1", "replace")
            for k, v in options.set_headers
            if k.lower() not in removed
        )
        self._prefix = options.path_prefix.encode()

    def __call__(self, request: CapturedRequest) -> bytes | None:
        if self._methods is not None and request.method not in self._methods:
            return None
        if self._pattern is not None and not self._pattern.search(request.target.decode("latin-1")):
            return None
        drop = self._drop
        parts = [request.method, b" ", self._prefix, request.target, b" HTTP/1.1\r\n"]
        parts.append(self._host_line)
        for name, value in request.headers:
            if name.decode("latin-1").lower() not in drop:
                parts += (name, b": ", value, b"\r\n")
        parts.append(self._extra)
        if request.body or request.method in _BODY_METHODS:
            parts.append(b"Content-Length: %d\r\n" % len(request.body))
        parts += (b"\r\n", request.body)
        return b"".join(parts)


def session_of(request: CapturedRequest, session_key: str | None) -> bytes:
    """The session a request belongs to: ``session_key``'s header or cookie, else HAR's
    ``connection``; empty when it has none (then requests are spread round-robin)."""
    if session_key is not None:
        if session_key.startswith("cookie:"):
            wanted = session_key[7:].encode("latin-1")
            for name, value in request.headers:
                if name.lower() != b"cookie":
                    continue
                for pair in value.split(b";"):
                    key, sep, val = pair.strip().partition(b"=")
                    if sep and key == wanted:
                        return val.strip()
        else:
            wanted = session_key.lower().encode("latin-1")
            for name, value in request.headers:
                if name.lower() == wanted:
                    return value.strip()
        return b""
    return request.connection


def session_hash(session: bytes) -> int:
    """A stable hash (the same in every process and pod, unlike ``hash()``); 0 means none."""
    if not session:
        return 0
    return zlib.crc32(session) or 1


def shard_of(index: int, session: int, shards: int) -> int:
    """Which of ``shards`` workers sends the ``index``-th request: by session, else round-robin."""
    return (session if session else index) % shards


@dataclass(frozen=True)
class Compiled:
    """A compiled schedule on disk, and what compiling it found."""

    directory: Path
    key: str
    requests: int
    filtered: int
    stats: CaptureStats
    cached: bool

    @property
    def index_path(self) -> Path:
        return self.directory / "index.bin"

    @property
    def wire_path(self) -> Path:
        return self.directory / "wire.bin"


#: A file's content hash is remembered by its identity (device, inode, size, mtime): hashing a
#: 10 GB capture on every replay would take longer than compiling it once. As git does, a file
#: modified within this many seconds of being hashed is hashed again next time ("racy" mtime).
RACY_SECONDS = 2.0


def _file_hash(path: str, remembered: Path | None) -> str:
    info = os.stat(path)
    identity = f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"
    note = None
    if remembered is not None:
        note = remembered / hashlib.sha256(identity.encode()).hexdigest()
        try:
            text = note.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        if _KEY.fullmatch(text):
            return text
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    content = digest.hexdigest()
    if note is not None and time.time() - info.st_mtime_ns / 1e9 > RACY_SECONDS:
        note.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = note.with_name(f".{note.name}.{os.getpid()}")
        tmp.write_text(content + "\n", encoding="ascii")
        os.replace(tmp, note)
    return content


def _content_hash(files: list[str], remembered: Path | None = None) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(b"\0file\0" + _file_hash(path, remembered).encode())
    return digest.hexdigest()


def cache_key(options: ReplayOptions, *, remembered: Path | None = None) -> str:
    """The content hash of the capture files and of every option that changes the bytes sent."""
    rewriting = {
        "version": VERSION,
        "format": options.capture_format,
        "host": options.host_header,
        "prefix": options.path_prefix,
        "set": [list(pair) for pair in options.set_headers],
        "remove": sorted(h.lower() for h in options.remove_headers),
        "methods": list(options.methods) if options.methods else None,
        "pattern": options.path_pattern,
        "session_key": options.session_key,
        # NB: names matter for positions in malformed samples and for the merge order of files
        "names": [os.path.basename(f) for f in options.files],
        "content": _content_hash(list(options.files), remembered),
    }
    return hashlib.sha256(json.dumps(rewriting, sort_keys=True).encode()).hexdigest()


def _stats_from(data: Any) -> CaptureStats:
    stats = CaptureStats(
        files=[str(f) for f in data["files"]],
        records=int(data["records"]),
        requests=int(data["requests"]),
        skipped_responses=int(data["skipped_responses"]),
        malformed=int(data["malformed"]),
    )
    stats.samples = [
        Malformed(str(m["position"]), str(m["reason"])) for m in data["malformed_samples"]
    ]
    return stats


def open_compiled(directory: Path, *, cached: bool = True) -> Compiled:
    """A compiled schedule from its directory (what a worker process or a pod is handed)."""
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    if meta.get("version") != VERSION:
        raise ValueError(f"{directory}: schedule version {meta.get('version')!r}, not {VERSION}")
    requests = int(meta["requests"])
    size = (directory / "index.bin").stat().st_size
    if size != requests * RECORD.size:
        raise ValueError(f"{directory}: index.bin holds {size} bytes, not {requests} records")
    return Compiled(
        directory=directory,
        key=str(meta["key"]),
        requests=requests,
        filtered=int(meta["filtered"]),
        stats=_stats_from(meta["capture"]),
        cached=cached,
    )


def _write(options: ReplayOptions, into: Path, key: str) -> None:
    stats = CaptureStats()
    rewrite = Rewriter(options)
    count = filtered = 0
    first_ns: int | None = None
    latest = 0
    offset = 0
    pack = RECORD.pack
    with (
        open_private(into / "index.bin", "wb", buffering=_WRITE_BUFFER) as index,
        open_private(into / "wire.bin", "wb", buffering=_WRITE_BUFFER) as wire,
    ):
        requests: Iterator[CapturedRequest] = read_capture(
            list(options.files), fmt=options.capture_format, stats=stats
        )
        for request in requests:
            data = rewrite(request)
            if data is None:
                filtered += 1
                continue
            if first_ns is None:
                first_ns = request.at_ns
            # A clock that goes backwards (merged files that overlap, a hand-edited line) is
            # sent in file order at the latest time seen so far: never into the past.
            latest = max(latest, request.at_ns - first_ns)
            session = session_hash(session_of(request, options.session_key))
            flags = FLAG_HEAD if request.method == b"HEAD" else 0
            index.write(pack(latest, offset, len(data), session, flags))
            wire.write(data)
            offset += len(data)
            count += 1
    meta = {
        "version": VERSION,
        "key": key,
        "requests": count,
        "filtered": filtered,
        "wire_bytes": offset,
        "capture": stats.as_dict(),
        "compiled_at": round(time.time(), 3),
    }
    replace_private(into / "meta.json", json.dumps(meta, sort_keys=True) + "\n")


def _prune(root: Path, keep: str) -> None:
    """Keep the :data:`KEEP` most recently used schedules (and ``keep``); remove the rest."""
    entries = []
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink() and _KEY.fullmatch(child.name):
            # NB: "hashes" is not a 64-hex name: remembered hashes are never pruned here
            try:
                entries.append((child.stat().st_mtime, child))
            except OSError:
                continue
    entries.sort(reverse=True)
    for _mtime, child in entries[KEEP:]:
        if child.name != keep:
            shutil.rmtree(child, ignore_errors=True)
    notes = root / "hashes"
    if notes.is_dir() and not notes.is_symlink():
        remembered = sorted(notes.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for note in remembered[KEEP_HASHES:]:
            note.unlink(missing_ok=True)


def compile_capture(options: ReplayOptions, *, cache: Path) -> Compiled:
    """The compiled schedule of ``options``' capture: from the cache, or compiled now."""
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = cache_key(options, remembered=cache / "hashes")
    final = cache / key
    if final.is_dir() and not final.is_symlink():
        try:
            compiled = open_compiled(final)
        except (OSError, ValueError, KeyError, TypeError):
            shutil.rmtree(final, ignore_errors=True)  # a damaged entry is compiled again
        else:
            os.utime(final)
            return compiled
    tmp = cache / f".{key}.{os.getpid()}.{time.monotonic_ns()}"
    tmp.mkdir(mode=0o700)
    try:
        _write(options, tmp, key)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another replay compiled the same capture at the same time: theirs is as good.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(cache, key)
    compiled = open_compiled(final, cached=False)
    return compiled
