"""A compiled schedule -> what one worker sends and when: the items of its shard, timed.

Kept apart from the event loop so it can be tested without sockets. It reads the two files of
:mod:`chaosmem.traffic.compile` through ``mmap`` (nothing is parsed here: each request is a
slice of ``wire.bin``) and yields :data:`Item` tuples whose offset is seconds after the replay's
start. Every worker of a replay, on this machine or in a pod, walks the same index and
keeps its own share (:func:`chaosmem.traffic.compile.shard_of`), and every offset is computed
from the *global* position in the schedule, so the shards share one clock.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

from chaosmem.traffic.capture import CaptureStats
from chaosmem.traffic.compile import FLAG_HEAD, RECORD, Compiled
from chaosmem.traffic.options import ReplayOptions

__all__ = ["Item", "Schedule"]

_BATCH = 8192  # index records unpacked at a time (200 KiB)

#: One request to send: (offset in seconds after the start, bytes on the wire, HEAD?, session
#: hash or 0, already retried once?). A plain tuple, not a class: the replayer makes and reads
#: one per request, and a class's ``__init__`` is a Python call on that path (about a fifth of
#: the schedule's cost).
Item = tuple[float, bytes, bool, int, bool]


def _map(path: str) -> mmap.mmap | None:
    with open(path, "rb") as stream:
        try:
            return mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            return None  # an empty file cannot be mapped: an empty schedule


class Schedule:
    """An iterator of :data:`Item` for shard ``shard`` of ``shards``, pass after pass with
    ``loop``.

    With ``rate`` the n-th request of the whole schedule is due at ``n / rate``; otherwise at
    its recorded gap from the first request divided by ``speed``. ``filtered`` counts requests
    left out by ``methods`` or ``path_pattern``; ``passes`` counts passes started; ``stats``
    describes the capture (read once, when it was compiled).
    """

    def __init__(
        self, options: ReplayOptions, compiled: Compiled, *, shard: int = 0, shards: int = 1
    ) -> None:
        if not 0 <= shard < shards:
            raise ValueError(f"shard {shard} of {shards}")
        self.options = options
        self.compiled = compiled
        self.stats: CaptureStats = compiled.stats
        self.filtered = compiled.filtered
        self.passes = 0
        self.shard = shard
        self.shards = shards

    def __len__(self) -> int:
        """Requests in the whole schedule (all shards, one pass)."""
        return self.compiled.requests

    def __iter__(self) -> Iterator[Item]:
        options = self.options
        total = self.compiled.requests
        index_map = _map(str(self.compiled.index_path))
        wire = _map(str(self.compiled.wire_path))
        try:
            if index_map is None or wire is None or total == 0:
                self.passes += 1
                return
            rate, speed = options.rate, options.speed
            shard, shards = self.shard, self.shards
            size = RECORD.size
            unpack = RECORD.iter_unpack
            head = FLAG_HEAD
            position = 0  # global position over all passes (the rate clock)
            per_ns = 1e-9 / speed
            base = 0.0  # offset at which the current pass starts
            while True:
                self.passes += 1
                last_ns = 0
                sent_this_pass = 0
                for start in range(0, total, _BATCH):
                    chunk = index_map[start * size : min(start + _BATCH, total) * size]
                    for at_ns, at, length, session, flags in unpack(chunk):
                        # NB: the n-th request of the whole schedule goes to its session's
                        # shard, else to shard n % shards; with a rate it is due at n / rate
                        if shards > 1 and (session or position) % shards != shard:
                            position += 1
                            continue
                        offset = position / rate if rate else base + at_ns * per_ns
                        position += 1
                        sent_this_pass += 1
                        yield (offset, wire[at : at + length], flags == head, session, False)
                    last_ns = at_ns
                if not options.loop or sent_this_pass == 0:
                    return  # NB: a shard with no share of the capture must not spin forever
                # The next pass starts one average gap after this pass's last request.
                span = last_ns / 1e9 / speed
                base += span + span / max(total - 1, 1)
        finally:
            for mapped in (index_map, wire):
                if mapped is not None:
                    mapped.close()
