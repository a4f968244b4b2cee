"""Captured requests -> what the replayer sends and when: filtered, rewritten, timed.

Kept apart from the event loop so it can be tested without sockets: given options and a
capture, it yields :class:`Item` objects whose ``offset`` is seconds after the replay's start.
Every request goes to ``target_url``: the recorded Host is replaced (the recorded host and
scheme are never dialled), hop-by-hop headers are dropped, ``Content-Length`` is recomputed
from the body (chunked bodies were de-chunked by the parser), then ``headers`` are set and
``remove_headers`` removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from chaosmem.traffic.capture import CapturedRequest, CaptureStats, read_capture
from chaosmem.traffic.options import DROPPED_HEADERS, ReplayOptions

__all__ = ["Item", "Schedule"]

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
#: A looping replay keeps the first pass in memory up to this many bytes (see ``_pass``).
LOOP_CACHE_BYTES = 64 * 1024 * 1024


class Item:
    """One request to send: its bytes on the wire and when it is due."""

    __slots__ = ("head", "offset", "retried", "wire")

    def __init__(self, offset: float, wire: bytes, head: bool) -> None:
        self.offset = offset
        self.wire = wire
        self.head = head
        self.retried = False


class Schedule:
    """An iterator of :class:`Item`, pass after pass when ``loop`` is set.

    With ``rate`` the n-th request is due at ``n / rate``; otherwise at its recorded gap from
    the first request divided by ``speed``. A capture whose clock goes backwards (merged files
    that overlap, a hand-edited line) is sent in file order at the latest time seen so far:
    the replay is never asked to send into the past. ``filtered`` counts requests left out by
    ``methods`` or ``path_pattern`` (in the first pass); ``passes`` counts passes started;
    ``stats`` describes the first pass only.
    """

    def __init__(
        self,
        options: ReplayOptions,
        stats: CaptureStats,
        *,
        reader: Callable[[CaptureStats], Iterator[CapturedRequest]] | None = None,
    ) -> None:
        self.options = options
        self.stats = stats
        self.filtered = 0
        self.passes = 0
        self._cache: list[tuple[int, bytes, bool]] | None = None
        self._reader = reader or (
            lambda into: read_capture(list(options.files), fmt=options.capture_format, stats=into)
        )
        self._methods = frozenset(m.encode() for m in options.methods) if options.methods else None
        self._pattern = re.compile(options.path_pattern) if options.path_pattern else None
        self._drop = (
            DROPPED_HEADERS
            | {h.lower() for h in options.remove_headers}
            | {h.lower() for h in dict(options.set_headers)}
        )
        host = options.host_header.encode("idna" if not options.host_header.isascii() else "ascii")
        self._host_line = b"Host: " + host + b"\r\n"
        self._extra = b"".join(
            f"{k}: {v}\r\n".encode("latin-1", "replace")
            for k, v in options.set_headers
            if k.lower() not in {h.lower() for h in options.remove_headers}
        )
        self._prefix = options.path_prefix.encode()

    def wire(self, request: CapturedRequest) -> bytes | None:
        """The request as sent to the target, or None when the filters leave it out."""
        if self._methods is not None and request.method not in self._methods:
            return None
        if self._pattern is not None and not self._pattern.search(request.target.decode("latin-1")):
            return None
        drop = self._drop
        parts = [
            request.method,
            b" ",
            self._prefix,
            request.target,
            b" HTTP/1.1\r\n",
            self._host_line,
        ]
        for name, value in request.headers:
            if name.decode("latin-1").lower() not in drop:
                parts += (name, b": ", value, b"\r\n")
        parts.append(self._extra)
        if request.body or request.method in _BODY_METHODS:
            parts.append(b"Content-Length: %d\r\n" % len(request.body))
        parts += (b"\r\n", request.body)
        return b"".join(parts)

    def _pass(self) -> Iterator[tuple[int, bytes, bool]]:
        """(recorded ns, wire bytes, is HEAD) of one pass over the capture.

        Later passes of a looping replay read the same records again; a capture whose wire
        bytes fit in :data:`LOOP_CACHE_BYTES` is kept from the first pass instead, so looping
        costs no parsing (big captures still stream, pass after pass).
        """
        if self._cache is not None:
            yield from self._cache
            return
        keep: list[tuple[int, bytes, bool]] | None = [] if self.options.loop else None
        size = 0
        # Stats describe the capture once: later passes count into a scratch object.
        for request in self._reader(self.stats if self.passes == 1 else CaptureStats()):
            wire = self.wire(request)
            if wire is None:
                if self.passes == 1:
                    self.filtered += 1
                continue
            entry = (request.at_ns, wire, request.method == b"HEAD")
            if keep is not None:
                size += len(wire) + 100
                keep = keep if size <= LOOP_CACHE_BYTES else None
                if keep is not None:
                    keep.append(entry)
            yield entry
        if keep is not None:
            self._cache = keep

    def __iter__(self) -> Iterator[Item]:
        options = self.options
        index = 0
        base = 0.0  # offset at which the current pass starts
        while True:
            self.passes += 1
            first_ns: int | None = None
            last = base
            sent_this_pass = 0
            for at_ns, wire, head in self._pass():
                if options.rate is not None:
                    offset = index / options.rate
                else:
                    if first_ns is None:
                        first_ns = at_ns
                    offset = max(base + (at_ns - first_ns) / 1e9 / options.speed, last)
                last = offset
                index += 1
                sent_this_pass += 1
                yield Item(offset, wire, head)
            if not options.loop or sent_this_pass == 0:
                return
            # The next pass starts one average gap after this pass's last request.
            gap = (last - base) / max(sent_this_pass - 1, 1)
            base = last + gap
