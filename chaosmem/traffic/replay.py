"""The replayer: sends a :class:`Schedule` to the target on time, and accounts for every request.

Why not aiohttp: measured on this project's 2-core machine against nginx on loopback, aiohttp
(3.14, uvloop, 32 keep-alive connections) tops out near 12,000 req/s on one core, below the
20,000 req/s goal, while an asyncio protocol per connection with ``httptools`` (the C
HTTP parser uvicorn uses) for responses does about 100,000 on the same core. So each
connection here is a small asyncio protocol on uvloop; the HTTP parsing is httptools'.

Shape of the engine, all callbacks, no task per request:

* ``_pump`` sends every request that is due on an idle keep-alive connection (opening new
  ones up to ``concurrency``). When none is free the request waits, it is never dropped, and
  the wait shows up as schedule *lag* (actual send time minus scheduled time). When the next
  request is not yet due a single timer is armed for it.
* a response (or an error) frees its connection and calls ``_pump`` again, so at high rates
  the next due request goes out from the completion callback without a timer round trip.
* a sweep every 50-100 ms turns requests past their ``timeout`` into ``timeout`` errors and
  aborts their connections; a refused connect is ``refused``; a connection reset or closed
  before the response ends is ``reset``; anything else (a bad response, TLS) is ``other``;
  requests in flight when the replay is stopped are ``cancelled``.
* a request that fails on a reused keep-alive connection before a single response byte came
  back is retried once on a new connection: the server closed an idle connection at the
  moment we reused it, which says nothing about the service.
* once a second a line goes to ``seconds.jsonl`` and ``summary.json`` is rewritten (see
  :mod:`chaosmem.traffic.results` for the layout), and a progress line goes to stderr when
  it is a terminal. Per-request records are packed (22 bytes each) and written out every sweep,
  so memory stays flat however long the replay runs.

The replay ends when the schedule is exhausted and nothing is in flight, at ``duration``
(no request is sent after it; those in flight get their ``timeout``), or on :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import ssl
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final, cast
from urllib.parse import urlsplit

import httptools

from chaosmem.interrupts import stop_on_signals
from chaosmem.ledger import current_run
from chaosmem.secrets import redact_url
from chaosmem.state import open_private, private_dir
from chaosmem.traffic.capture import CaptureStats
from chaosmem.traffic.compile import compile_capture
from chaosmem.traffic.histogram import Histogram
from chaosmem.traffic.options import ReplayOptions, auto_workers
from chaosmem.traffic.results import (
    ERROR_CODES,
    LAG_SHARES,
    LATENCY_SHARES,
    REQUEST_RECORD,
    ms_percentiles,
    new_replay_id,
    replay_dir,
    set_latest,
    write_json_atomic,
)
from chaosmem.traffic.schedule import Item, Schedule

__all__ = ["Replayer", "run_engine", "run_replay", "schedule_cache"]

# NB: Final, so that the compiled engine keeps them in C variables instead of looking them up
# in the module's dict on every request
_PACK: Final = REQUEST_RECORD.pack
_TIMEOUT: Final = ERROR_CODES["timeout"]
_REFUSED: Final = ERROR_CODES["refused"]
_RESET: Final = ERROR_CODES["reset"]
_OTHER: Final = ERROR_CODES["other"]
_CANCELLED: Final = ERROR_CODES["cancelled"]
_ERROR_NAME: Final = {code: name for name, code in ERROR_CODES.items()}


_now: Final = time.perf_counter
#: connections are opened before the clock for the requests due in its first this many seconds
WARM_WINDOW: Final = 0.005
#: which engine this is: these lines compiled by mypyc (chaosmem.traffic.native), or interpreted
ENGINE = "interpreted" if __file__.endswith(".py") else "compiled"


class _Conn:
    """One keep-alive connection carrying at most one request at a time: an asyncio protocol.

    Not a subclass of ``asyncio.Protocol``, so that it compiles to a native class (see
    :mod:`chaosmem.traffic.native`); the event loop only calls the methods, and the ones the
    base class would supply (``eof_received``, ``pause_writing``, ``resume_writing``) are here.
    The replayer sets ``item``, ``sent_at``, ``got`` and ``headers_done`` and calls ``write``
    itself when it sends (inline: a method call per request costs more than the assignments).
    """

    __slots__ = (
        "dead",
        "dial",
        "done",
        "engine",
        "got",
        "headers_done",
        "item",
        "parser",
        "reused",
        "sent_at",
        "transport",
        "write",
    )

    def __init__(self, engine: Replayer) -> None:
        self.engine = engine
        #: the replayer's completion handler, bound once: it runs for every response
        self.done = engine.completed
        self.transport: asyncio.Transport | None = None
        #: the transport's ``write``, bound once it is connected (None until then)
        self.write: Any = None
        self.parser = httptools.HttpResponseParser(self)
        #: the request in flight
        self.item: Item | None = None
        self.sent_at = 0.0
        self.got = False
        self.headers_done = False
        self.reused = False
        self.dead = False
        self.dial: asyncio.Task[Any] | None = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        elif self.dial is not None:
            self.dial.cancel()

    # -- asyncio side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write = transport.write  # type: ignore[attr-defined]
        if self.item is not None:
            self.write(self.item[1])

    def data_received(self, data: bytes) -> None:
        self.got = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.item is not None:
                self.engine.failed(self, _OTHER)
            self.abort()
            return
        if self.headers_done and self.item is not None and self.item[2]:
            # NB: httptools cannot be told a response answers HEAD and would wait for the body
            # its Content-Length announces; the headers are the whole response.
            status = self.parser.get_status_code()
            self.parser = httptools.HttpResponseParser(self)
            self.done(self, status, True)

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200 and status >= 100 and status != 101:
            self.headers_done = False
            return  # an interim response (103 Early Hints); the real one follows
        item = self.item
        if item is not None and not item[2]:
            self.done(self, status, parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.lost(self, exc)

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost accounts for the request

    def pause_writing(self) -> None:
        pass  # one request at a time per connection: nothing more is written until it ends

    def resume_writing(self) -> None:
        pass


class _Second:
    """Counters for one elapsed second of the replay (a line of ``seconds.jsonl``)."""

    __slots__ = ("codes", "completed", "lag", "latency", "sent", "statuses")

    def __init__(self) -> None:
        self.sent = 0
        self.completed = 0
        #: answers by HTTP status, indexed by the status (a list: counted once per response)
        self.statuses = [0] * 1000
        #: error codes (negative), and any status the list cannot hold
        self.codes: dict[int, int] = {}
        self.lag = Histogram()
        self.latency = Histogram()

    def all_codes(self) -> dict[int, int]:
        """Every status and error code counted this second, with its count."""
        counts = dict(self.codes)
        statuses = self.statuses
        for code in itertools.compress(range(len(statuses)), statuses):
            counts[code] = counts.get(code, 0) + statuses[code]
        return counts


class Replayer:
    """One replay run on the current event loop; ``await run()`` returns the final summary."""

    def __init__(
        self,
        options: ReplayOptions,
        *,
        replay_id: str,
        out_dir: Path | None,
        schedule: Schedule,
        progress: IO[str] | None = None,
        start_at: float | None = None,
        detail: bool = False,
    ) -> None:
        self.options = options
        self.replay_id = replay_id
        self.out_dir = out_dir
        self.schedule = schedule
        self.stats: CaptureStats = schedule.stats
        #: the unix time the schedule's clock starts (shared by every shard); None: at run()
        self.start_at = start_at
        #: a shard's outputs keep their lag buckets per second, so that seconds can merge
        self.detail = detail
        self.timeout = options.timeout
        self.progress = progress
        parts = urlsplit(options.target_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._items = iter(self.schedule)
        self._next: Item | None = None
        self._exhausted = False
        #: items that go before the schedule's next: retries, and requests released when the
        #: previous request of their session ended
        self._ready: deque[Item] = deque()
        #: sessions with a request in flight (or in ``_ready``) -> their requests waiting behind
        self._busy: dict[int, deque[Item] | None] = {}
        self._idle: list[_Conn] = []
        self._conns: set[_Conn] = set()
        self._inflight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = False
        #: the schedule's clock has started (connections may open before it, see _warm)
        self._clock = False
        self._state = "running"
        self._error: str | None = None
        self._finished: asyncio.Future[None] | None = None
        # accounting
        self._second = _Second()
        self._seconds_written = 0
        self._total_sent = 0  # of the seconds flushed; the current one is in self._second
        self._total_codes: dict[int, int] = {}
        self._latency = Histogram()
        self._lag = Histogram()
        self._retried = 0
        self._warmed = 0  # connections open before the clock started
        self._unsent_due = 0  # due before `duration` ended, never sent (back-pressure)
        self._buf = bytearray()
        self._files: dict[str, IO[Any]] = {}

    # -- public -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self._loop = asyncio.get_running_loop()
        self._finished = self._loop.create_future()
        if self.out_dir is not None:
            private_dir(self.out_dir)
            self._files["seconds"] = open_private(
                self.out_dir / "seconds.jsonl", "a", encoding="utf-8"
            )
            self._files["requests"] = open_private(self.out_dir / "requests.bin", "ab")
        self._cpu0 = time.process_time()
        self.started_at, self._t0 = time.time(), _now()  # until the clock starts, after warming
        try:
            await self._warm()
            if not self._finished.done():  # NB: stopped while warming: nothing to start
                self._write_summary()  # NB: before the clock: it takes a while
                self._start_clock()
                self._pump()
            await self._finished
        except asyncio.CancelledError:
            # Ctrl-C in a foreground replay: account for what was in flight, then let it unwind.
            self.stop()
            raise
        finally:
            self._close_all()
        return self.summary()

    async def _warm(self) -> None:
        """Open, before the clock starts, the connections the schedule's first moments need.

        Why: at a high rate the first few milliseconds are due at once, and without open
        connections they all wait for handshakes, which shows as schedule lag that says nothing
        about the target (wrk too connects before it counts). As many connections as requests
        are due in the first :data:`WARM_WINDOW` seconds, up to ``concurrency``; one that fails
        is only dropped (the request that dials again reports the error).
        """
        head: list[Item] = []
        try:
            for item in itertools.islice(self._items, self.options.concurrency):
                head.append(item)
                if item[0] >= WARM_WINDOW:
                    break
        except Exception as exc:
            # NB: what was read still goes out; the schedule then ends there, failed
            self._state = "failed"
            self._error = f"reading the schedule failed: {type(exc).__name__}: {exc}"
        self._items = itertools.chain(head, self._items)
        wanted = sum(1 for item in head if item[0] < WARM_WINDOW)
        conns = [self._dial() for _ in range(wanted)]
        dials = [conn.dial for conn in conns if conn.dial is not None]
        if dials:
            _done, late = await asyncio.wait(dials, timeout=min(self.timeout, 5.0))
            for dial in late:
                dial.cancel()
        self._warmed = sum(1 for conn in conns if conn.dial is None and not conn.dead)

    def _start_clock(self) -> None:
        wall, now = time.time(), _now()
        if self.start_at is None:
            self.started_at, self._t0 = wall, now
        else:
            # One clock for every shard: the agreed unix start time, on this process's timer.
            self.started_at, self._t0 = self.start_at, now + (self.start_at - wall)
        duration = self.options.duration
        self._cap_at = self._t0 + duration if duration is not None else float("inf")
        sweep = min(0.1, max(self.timeout / 4, 0.01))
        self._sweeper = self._loop.call_later(sweep, self._sweep, sweep)
        self._ticker = self._loop.call_later(max(self._t0 + 1.0 - now, 0.0), self._tick)
        if duration is not None:
            # The replay's own hard end: in-flight requests have had their timeout by then.
            hard = self._t0 + duration + self.timeout + 1.0 - now
            self._hard = self._loop.call_later(max(hard, 0.0), self.stop)
        self._clock = True

    def stop(self) -> None:
        """Stop sending, cancel what is in flight, and finish (idempotent, loop thread only)."""
        if self._stopping or self._finished is None or self._finished.done():
            return
        self._stopping = True
        if self._state == "running":
            self._state = "stopped"
        now = _now()
        for conn in list(self._conns):
            if conn.item is not None:
                self._error_out(conn, _CANCELLED, now)
            conn.abort()
        self._finish()

    # -- sending ----------------------------------------------------------------------------

    def _read_next(self) -> Item | None:
        try:
            return next(self._items)
        except StopIteration:
            self._exhausted = True
        except Exception as exc:
            self._exhausted = True
            self._state = "failed"
            self._error = f"reading the schedule failed: {type(exc).__name__}: {exc}"
        return None

    def _pump(self) -> None:
        if self._stopping or not self._clock:
            return
        now = _now()
        idle = self._idle
        limit = self.options.concurrency
        t0 = self._t0
        ready = self._ready
        busy = self._busy
        while True:
            queued = bool(ready)
            if queued:
                item: Item | None = ready[0]
            else:
                item = self._next
                if item is None and not self._exhausted:
                    item = self._next = self._read_next()
            if item is None or now >= self._cap_at:
                if item is not None:
                    self._count_unsent()
                self._exhausted = True
                self._next = None
                if now >= self._cap_at:  # nothing is sent after ``duration``
                    ready.clear()
                    busy.clear()
                self._maybe_finish()
                return
            due = t0 + item[0]
            if due > now and not queued:
                if due >= self._cap_at:
                    self._exhausted = True
                    self._next = None
                    self._maybe_finish()
                    return
                self._arm(due, now)
                return
            session = item[3]
            if session and not queued and session in busy:
                # NB: one request of a session at a time, in recorded order: the next one waits
                # for the previous one's end, as the recorded client did.
                held = busy[session]
                if held is None:
                    held = busy[session] = deque()
                held.append(item)
                self._next = None
                continue
            if idle:
                conn = idle.pop()
            elif len(self._conns) < limit:
                conn = self._dial()
            else:
                return  # back-pressure: the next completion pumps again
            if queued:
                ready.popleft()
            else:
                self._next = None
                if session:
                    busy[session] = None
            # NB: what sending is, inline (see _Conn); a connection still dialling sends from
            # connection_made
            conn.item = item
            conn.sent_at = now
            conn.got = conn.headers_done = False
            write = conn.write
            if write is not None:
                write(item[1])
            self._inflight += 1
            second = self._second
            second.sent += 1
            second.lag.record(int((now - due) * 1e6))  # merged into the total each second
            if not idle and len(self._conns) >= limit:
                return  # every connection is busy: the next completion pumps again
            now = _now()

    def _arm(self, due: float, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # NB: libuv timers have millisecond resolution; below that, poll on the next iteration.
        delay = due - now
        self._timer = self._loop.call_later(delay if delay >= 0.001 else 0, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _dial(self) -> _Conn:
        conn = _Conn(self)
        self._conns.add(conn)
        conn.dial = self._loop.create_task(self._connect(conn))
        return conn

    async def _connect(self, conn: _Conn) -> None:
        try:
            await self._loop.create_connection(
                lambda: cast(asyncio.Protocol, conn),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        except asyncio.CancelledError:
            self._drop(conn)  # the sweep timed it out, or the replay stopped
        except ConnectionRefusedError:
            self._conn_failed(conn, _REFUSED)
        except (ConnectionResetError, BrokenPipeError):
            self._conn_failed(conn, _RESET)
        except (OSError, ssl.SSLError):
            self._conn_failed(conn, _OTHER)
        else:
            conn.dial = None
            if conn.item is None and not conn.dead and not self._stopping:
                self._idle.append(conn)  # opened ahead of its first request (see _warm)

    def _conn_failed(self, conn: _Conn, code: int) -> None:
        if conn.item is not None:
            self._error_out(conn, code, _now())
        self._drop(conn)
        self._pump()

    def _drop(self, conn: _Conn) -> None:
        if conn.dead:
            return
        conn.dead = True
        self._conns.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._maybe_finish()

    # -- outcomes ---------------------------------------------------------------------------

    def _record(self, item: Item, sent_at: float, now: float, code: int, latency_us: int) -> None:
        self._buf += _PACK(int(item[0] * 1e6), int((sent_at - self._t0) * 1e6), latency_us, code)
        if item[3]:
            self._release(item[3])
        codes = self._second.codes
        codes[code] = codes.get(code, 0) + 1
        self._inflight -= 1

    def _release(self, session: int) -> None:
        """The session's request ended: its next one (if waiting) goes before the schedule's."""
        held = self._busy.get(session)
        if held:
            self._ready.append(held.popleft())  # the session stays busy with its next one
        else:
            self._busy.pop(session, None)

    def completed(self, conn: _Conn, status: int, keep_alive: bool) -> None:
        item = conn.item
        if item is None:
            return
        conn.item = None
        sent_at = conn.sent_at
        latency = int((_now() - sent_at) * 1e6)
        # NB: what _record does, inline: this runs once per answered request; the second's
        # latency merges into the total each second, as its lag does
        second = self._second
        second.latency.record(latency)
        self._buf += _PACK(int(item[0] * 1e6), int((sent_at - self._t0) * 1e6), latency, status)
        if item[3]:
            self._release(item[3])
        second.completed += 1
        if 0 <= status < 1000:
            second.statuses[status] += 1
        else:
            second.codes[status] = second.codes.get(status, 0) + 1
        self._inflight -= 1
        conn.reused = True
        if keep_alive and not self._stopping:
            self._idle.append(conn)
        else:
            conn.abort()
        self._pump()

    def failed(self, conn: _Conn, code: int) -> None:
        if conn.item is not None:
            self._error_out(conn, code, _now())

    def _error_out(self, conn: _Conn, code: int, now: float) -> None:
        item = conn.item
        assert item is not None
        conn.item = None
        self._record(item, conn.sent_at, now, code, -1)

    def lost(self, conn: _Conn, exc: Exception | None) -> None:
        item = conn.item
        if item is not None:
            now = _now()
            if conn.headers_done and not item[2]:
                # A response delimited by the connection's end (no Content-Length): complete.
                self.completed(conn, conn.parser.get_status_code(), False)
            elif not conn.got and conn.reused and not item[4] and not self._stopping:
                # Retried once, at the head of the queue, marked as retried.
                conn.item = None
                self._retried += 1
                self._inflight -= 1
                self._second.sent -= 1
                self._ready.appendleft((item[0], item[1], item[2], item[3], True))
            elif exc is None or isinstance(exc, ConnectionResetError | BrokenPipeError):
                self._error_out(conn, _RESET, now)
            else:
                self._error_out(conn, _OTHER, now)
        self._drop(conn)
        self._pump()

    def _count_unsent(self) -> None:
        """At the end of ``duration``: count what was due before it and never sent (a hung
        target holds every connection, so the schedule falls behind): its own figure in the
        summary, not hidden among the requests that were sent."""
        limit = self.options.duration
        if limit is None:
            return
        pending = list(self._ready)
        for held in self._busy.values():
            pending.extend(held or ())
        if self._next is not None:
            pending.append(self._next)
        self._unsent_due += sum(1 for i in pending if i[0] < limit)
        for count, item in enumerate(self._items):
            # NB: bounded: a looping schedule is endless, and its offsets only grow
            if item[0] >= limit or count >= 10_000_000:
                break
            self._unsent_due += 1

    def _sweep(self, interval: float) -> None:
        now = _now()
        expired = now - self.timeout
        for conn in list(self._conns):
            if conn.item is not None and conn.sent_at < expired:
                self._error_out(conn, _TIMEOUT, now)
                conn.abort()
        self._sweeper = self._loop.call_later(interval, self._sweep, interval)
        self._write_requests()
        self._pump()

    def _write_requests(self) -> None:
        """Hand the packed request records to the file: from every sweep (50-100 ms) as well as
        each second, so that no one write of a second's records (2 MB at 90,000 req/s) pauses
        the schedule."""
        if self._buf and "requests" in self._files:
            self._files["requests"].write(self._buf)
            self._files["requests"].flush()
        self._buf.clear()

    def _maybe_finish(self) -> None:
        idle = self._exhausted and self._inflight <= 0 and not self._ready and self._next is None
        if idle and self._finished is not None and not self._finished.done():
            self._finish()

    def _finish(self) -> None:
        if self._state == "running":
            self._state = "done"
        self._ended = _now()
        assert self._finished is not None
        if not self._finished.done():
            self._finished.set_result(None)

    # -- accounting -------------------------------------------------------------------------

    def _tick(self) -> None:
        self._flush_second(partial=False)
        # Aligned on the replay's start, so a late tick does not shift every later second.
        delay = self._t0 + self._seconds_written + 1 - _now()
        self._ticker = self._loop.call_later(max(delay, 0.0), self._tick)

    def _flush_second(self, *, partial: bool) -> None:
        if partial and not self._second.sent and not self._second.all_codes():
            self._write_requests()
            self._write_summary()
            return
        second, self._second = self._second, _Second()
        self._seconds_written += 1
        self._total_sent += second.sent
        status: dict[str, int] = {}
        errors: dict[str, int] = {}
        self._lag.merge(second.lag)
        self._latency.merge(second.latency)
        for code, n in second.all_codes().items():
            self._total_codes[code] = self._total_codes.get(code, 0) + n
            if code > 0:
                status[str(code)] = n
            else:
                errors[_ERROR_NAME[code]] = n
        lag = second.lag.percentile(0.99)
        line = {
            "t": round(time.time(), 3),
            "elapsed": round(_now() - self._t0, 3),
            "sent": second.sent,
            "completed": second.completed,
            "status": status,
            "errors": errors,
            "lag_p99_ms": round(lag / 1000, 3) if lag is not None else None,
        }
        if partial:
            line["partial"] = True
        if self.detail:
            line["lag_hist"] = second.lag.to_sparse()
            line["latency_hist"] = second.latency.to_sparse()
        if "seconds" in self._files:
            self._files["seconds"].write(json.dumps(line, sort_keys=True) + "\n")
            self._files["seconds"].flush()
        self._write_requests()
        self._write_summary()
        if self.progress is not None and not partial:
            self._show_progress(line)

    def _show_progress(self, line: dict[str, Any]) -> None:
        assert self.progress is not None
        total = sum(self._total_codes.values()) or 1
        mix = " ".join(
            f"{_ERROR_NAME.get(code, code)}:{100 * n / total:.1f}%"
            for code, n in sorted(self._total_codes.items(), key=lambda kv: -kv[1])[:5]
        )
        self.progress.write(
            f"\r\x1b[K{line['elapsed']:7.1f}s  sent {self._total_sent + self._second.sent:,}  "
            f"{line['sent']:,} req/s  lag p99 {line['lag_p99_ms']} ms  {mix}"
        )
        self.progress.flush()

    def _write_summary(self) -> None:
        if self.out_dir is not None:
            write_json_atomic(self.out_dir / "summary.json", self.summary())

    def summary(self) -> dict[str, Any]:
        """Counts, rates and percentiles so far; final once the run has returned."""
        end = getattr(self, "_ended", None) or _now()
        duration = max(end - self._t0, 1e-9) if hasattr(self, "_t0") else 0.0
        codes = dict(self._total_codes)
        for code, n in self._second.all_codes().items():  # the current, unflushed second
            codes[code] = codes.get(code, 0) + n
        status = {str(c): n for c, n in sorted(codes.items()) if c > 0}
        errors = {name: codes.get(code, 0) for name, code in ERROR_CODES.items()}
        answered = sum(status.values())
        finished = answered + sum(errors.values())

        lag, latency = self._lag, self._latency
        if self._second.lag.count or self._second.latency.count:  # the current, unflushed second
            lag, latency = Histogram(), Histogram()
            for total, current, into in (
                (self._lag, self._second.lag, lag),
                (self._latency, self._second.latency, latency),
            ):
                into.merge(total)
                into.merge(current)
        return {
            "replay_id": self.replay_id,
            "run": current_run(),
            "state": self._state,
            "error": self._error,
            "pid": os.getpid(),
            "target_url": redact_url(self.options.target_url),
            "options": self.options.public_spec(),
            "started_at": round(getattr(self, "started_at", time.time()), 3),
            "ended_at": round(self.started_at + duration, 3) if self._state != "running" else None,
            "duration_s": round(duration, 4),
            "sent": self._total_sent + self._second.sent,
            "completed": answered,
            "no_status": sum(errors.values()),
            "in_flight": max(self._inflight, 0),
            "retried_stale_connections": self._retried,
            "warmed_connections": self._warmed,
            "unsent_due": self._unsent_due,
            "status": status,
            "errors": errors,
            "req_per_s": round(finished / duration, 1) if duration else 0.0,
            "latency_ms": {
                **ms_percentiles(latency, LATENCY_SHARES),
                "mean": round(latency.mean / 1000, 3) if latency.mean is not None else None,
            },
            "lag_ms": ms_percentiles(lag, LAG_SHARES),
            "histograms": {"latency_us": latency.to_sparse(), "lag_us": lag.to_sparse()},
            "workers": 1,
            "engine": ENGINE,
            # CPU of this process (user + system) while the replay ran: what sending costs
            "cpu_s": round(time.process_time() - getattr(self, "_cpu0", time.process_time()), 3),
            "passes": self.schedule.passes,
            "filtered": self.schedule.filtered,
            "capture": self.stats.as_dict(),
        }

    def _close_all(self) -> None:
        for handle in ("_timer", "_sweeper", "_ticker", "_hard"):
            timer = getattr(self, handle, None)
            if timer is not None:
                timer.cancel()
        for conn in list(self._conns):
            conn.abort()
        self._idle.clear()
        self._flush_second(partial=True)
        for stream in self._files.values():
            stream.close()
        self._files.clear()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_engine(
    options: ReplayOptions,
    schedule: Schedule,
    *,
    replay_id: str,
    out_dir: Path,
    progress: IO[str] | None = None,
    start_at: float | None = None,
    detail: bool = False,
    on_start: Any = None,
) -> dict[str, Any]:
    """One :class:`Replayer` on a fresh uvloop in this thread, to its end; the summary.

    SIGTERM or SIGINT (when this is the main thread) stops it gracefully: the summary is still
    written, with ``"state": "stopped"``; then the signal goes on to the handler that was in place
    before (``KeyboardInterrupt`` for SIGINT, Chaos Toolkit's interrupt for SIGTERM), see
    :mod:`chaosmem.interrupts`.
    """
    replayer = Replayer(
        options,
        replay_id=replay_id,
        out_dir=out_dir,
        schedule=schedule,
        progress=progress,
        start_at=start_at,
        detail=detail,
    )

    async def main() -> dict[str, Any]:
        if on_start is not None:
            on_start(replayer)
        return await replayer.run()

    def stop_when_running() -> None:
        # NB: a signal may come before the replay has started; stop() would then be lost.
        if replayer._finished is None:
            runner.get_loop().call_later(0.01, stop_when_running)
        else:
            replayer.stop()

    # NB: the handlers are ours only while the replay runs; Chaos Toolkit's come back after it.
    with (
        _frozen_heap(),
        asyncio.Runner(loop_factory=_new_loop) as runner,
        stop_on_signals(
            lambda: runner.get_loop().call_soon_threadsafe(stop_when_running),
            work="replay_traffic",
        ),
    ):
        return runner.run(main())


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """While a replay runs, the garbage collector leaves the objects that existed before it alone.

    Why: a full collection walks every object of the process (in a ``chaos run``, Chaos Toolkit,
    the kubernetes client and their modules), a pause of tens of milliseconds in the middle of the
    schedule, which shows as lag. The replay's own objects are still collected.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def schedule_cache(state: Path) -> Path:
    """Where compiled schedules of this state dir live (see :mod:`chaosmem.traffic.compile`)."""
    return state / "cache" / "schedules"


def run_replay(
    options: ReplayOptions,
    *,
    state: Path,
    replay_id: str | None = None,
    progress: bool = False,
    make_latest: bool = True,
    on_start: Any = None,
) -> dict[str, Any]:
    """Run a replay to its end, results in ``STATE/replays/<id>``; the (merged) summary.

    The capture is compiled first (or found in the cache), before the clock starts. With
    ``options.workers`` above 1 the schedule is split across that many worker processes
    (:mod:`chaosmem.traffic.shard`), never more than it has requests; their results merge
    into this replay's one summary. Stopping: see :func:`run_engine` and
    :func:`chaosmem.traffic.shard.run_sharded`.
    """
    rid = replay_id or new_replay_id()
    out = replay_dir(state, rid)
    private_dir(out)
    if make_latest:
        set_latest(state, rid)
    stream = sys.stderr if progress and sys.stderr.isatty() else None
    compiled = compile_capture(options, cache=schedule_cache(state))
    workers = auto_workers(options, compiled.requests)
    if workers > 1:
        from chaosmem.traffic.shard import run_sharded

        summary = run_sharded(
            options, compiled, out=out, replay_id=rid, workers=workers, progress=stream
        )
    else:
        summary = run_engine(
            options,
            Schedule(options, compiled),
            replay_id=rid,
            out_dir=out,
            progress=stream,
            on_start=on_start,
        )
    if stream is not None:
        stream.write("\n")
    return summary
