"""Every replay argument checked once, for the activity, the CLI and the worker process alike.

Nothing is sent before all of them pass: a typo in a header name must not turn into a
half-started load test. Each refusal is an :class:`InvalidArgument` naming the argument.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaosmem.errors import InvalidArgument
from chaosmem.secrets import redact_headers, redact_url
from chaosmem.traffic.capture import FORMATS, expand_capture
from chaosmem.validate import check_bool, check_choice, check_int, check_url

__all__ = [
    "DEFAULT_CONCURRENCY",
    "ReplayOptions",
    "auto_workers",
    "available_cores",
    "parse_options",
]

DEFAULT_CONCURRENCY = 64
MAX_CONCURRENCY = 20_000
MAX_WORKERS = 256
SESSION_KEY_EXPECTED = "a header name such as 'X-Session-Id', or 'cookie:NAME' such as 'cookie:sid'"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Hop-by-hop headers are about the recorded connection, not the request: a recorded
#: ``Connection: close`` would defeat keep-alive, ``Expect: 100-continue`` would stall.
#: ``Content-Length``/``Transfer-Encoding`` are recomputed from the (de-chunked) body.
DROPPED_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "expect",
        "content-length",
        "transfer-encoding",
    }
)


@dataclass(frozen=True)
class ReplayOptions:
    """A replay, fully validated. ``to_spec()`` gives back arguments ``parse_options`` accepts."""

    files: tuple[str, ...]
    capture_format: str
    target_url: str
    speed: float
    rate: float | None
    duration: float | None
    loop: bool
    concurrency: int
    timeout: float
    set_headers: tuple[tuple[str, str], ...]
    remove_headers: tuple[str, ...]
    methods: tuple[str, ...] | None
    path_pattern: str | None
    allow_remote: bool
    session_key: str | None = None
    #: worker processes; None: :func:`auto_workers` once the schedule's size is known
    workers: int | None = None

    @property
    def host_header(self) -> str:
        parts = urlsplit(self.target_url)
        return parts.netloc.rpartition("@")[2]

    @property
    def path_prefix(self) -> str:
        return urlsplit(self.target_url).path.rstrip("/")

    def to_spec(self) -> dict[str, Any]:
        """Everything, secrets included: only for handing the replay to its worker in memory."""
        spec = asdict(self)
        spec["capture"] = list(spec.pop("files"))
        spec["headers"] = dict(spec.pop("set_headers"))
        return spec

    def public_spec(self) -> dict[str, Any]:
        """:meth:`to_spec` with credential-like header values and a URL password masked: what
        summaries, ``spec.json`` and activity results carry."""
        spec = self.to_spec()
        spec["headers"] = redact_headers(spec["headers"])
        spec["target_url"] = redact_url(self.target_url)
        return spec

    def secret_spec(self) -> dict[str, Any]:
        """The arguments :meth:`public_spec` masked, to pass to a worker without writing them."""
        spec = self.to_spec()
        public = self.public_spec()
        return {k: spec[k] for k in ("headers", "target_url") if spec[k] != public[k]}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], **changes: Any) -> ReplayOptions:
        """Back from :meth:`to_spec` without checking again: only for a spec this process's
        parent wrote after :func:`parse_options` passed (a worker's ``spec.json``)."""
        fields = dict(spec)
        fields["files"] = tuple(fields.pop("capture"))
        fields["set_headers"] = tuple((str(k), str(v)) for k, v in fields.pop("headers").items())
        fields["remove_headers"] = tuple(fields["remove_headers"])
        if fields.get("methods") is not None:
            fields["methods"] = tuple(fields["methods"])
        fields.update(changes)
        return cls(**fields)


def _positive(value: object, *, name: str, expected: str, suffix: str = "") -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int such as 10**400
            number = None
    elif isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        if suffix and text.endswith(suffix):
            text = text[: -len(suffix)]
        try:
            number = float(text)
        except ValueError:
            number = None
    # NB: at most 1e9: a speed or rate beyond is a typo, and would overflow the schedule's maths
    if number is None or not math.isfinite(number) or not 0 < number <= 1e9:
        raise InvalidArgument(name, value, expected)
    return number


def _header_name(value: object, *, name: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise InvalidArgument(
            name, value, "an HTTP header name (letters, digits, '-', no spaces or ':')"
        )
    return value


def _header_value(value: object, *, name: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise InvalidArgument(name, value, "a header value: a string without line breaks")
    return value


def _str_list(value: object, *, name: str) -> list[object]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    raise InvalidArgument(name, value, "a string or a list of strings")


def _cgroup_quota_cores() -> float | None:
    """The CPU quota of this process's cgroup, in cores (v2 ``cpu.max``, v1 CFS quota)."""
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        _hier, controllers, path = line.split(":", 2)
        if controllers == "":
            files = [Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.max"]
        elif "cpu" in controllers.split(","):
            base = Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
            files = [base / "cpu.cfs_quota_us", base / "cpu.cfs_period_us"]
        else:
            continue
        try:
            if files[0].name == "cpu.max":
                quota_text, period_text = files[0].read_text(encoding="utf-8").split()[:2]
            else:
                quota_text = files[0].read_text(encoding="utf-8").strip()
                period_text = files[1].read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            continue
        if quota_text in {"max", "-1"}:
            continue
        try:
            quota, period = int(quota_text), int(period_text)
        except ValueError:
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - Linux has it
        cores = os.cpu_count() or 1
    quota = _cgroup_quota_cores()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


#: Requests per worker below which another worker process costs more (its start-up, about a
#: tenth of a second of CPU) than it saves.
REQUESTS_PER_WORKER = 5000


def auto_workers(options: ReplayOptions, requests: int) -> int:
    """How many worker processes replay ``requests`` requests: ``options.workers`` when given,
    else the cores available (:func:`available_cores`) for a schedule big enough to share, and
    never more workers than requests or connections."""
    if options.workers is not None:
        wanted = options.workers
    else:
        work = requests if not options.loop else max(requests, REQUESTS_PER_WORKER * 1024)
        wanted = min(available_cores(), max(1, work // REQUESTS_PER_WORKER))
    return max(1, min(wanted, requests, options.concurrency))


def _pod_paths(capture: object) -> list[str]:
    items = list(capture) if isinstance(capture, list | tuple) else [capture]
    expected = "capture file paths relative to the pods' capture volume, such as 'orders.gor'"
    if not items:
        raise InvalidArgument("capture", capture, expected)
    for item in items:
        if (
            not isinstance(item, str)
            or not item.strip()
            or item.startswith("/")
            or ".." in Path(item).parts
            or any(c in item for c in "\0\r\n")
            or len(item) > 1024
        ):
            raise InvalidArgument("capture", item, expected)
    return [str(i) for i in items]


def _session_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument("session_key", value, SESSION_KEY_EXPECTED)
    kind, sep, name = value.partition(":")
    if sep and kind.strip().lower() == "cookie":
        if not _TOKEN.fullmatch(name.strip()):
            raise InvalidArgument("session_key", value, SESSION_KEY_EXPECTED)
        return "cookie:" + name.strip()
    if not _TOKEN.fullmatch(value):
        raise InvalidArgument("session_key", value, SESSION_KEY_EXPECTED)
    return value


def parse_options(
    *,
    capture: object,
    target_url: object,
    speed: object = 1.0,
    rate: object = None,
    duration: object = None,
    loop: object = False,
    concurrency: object = DEFAULT_CONCURRENCY,
    timeout: object = "5s",
    headers: object = None,
    remove_headers: object = None,
    methods: object = None,
    path_pattern: object = None,
    allow_remote: object = False,
    capture_format: object = "auto",
    session_key: object = None,
    workers: object = None,
    local_capture: bool = True,
) -> ReplayOptions:
    """Check every argument; ``rate`` (req/s) replaces the recorded timing when given.

    ``workers`` is capped by ``concurrency`` (each worker needs a connection of its own); left
    out, :func:`auto_workers` picks it once the capture is compiled. ``local_capture=False``
    (a replay in pods) takes ``capture`` as paths inside the pods' capture volume: relative,
    without ``..``, not checked here.
    """
    # NB: imported here: chaosmem.units imports the kubernetes client (its quantity parser),
    # which a worker process re-reading its spec (ReplayOptions.from_spec) does not need
    from chaosmem.units import parse_duration

    remote = check_bool(allow_remote, name="allow_remote")
    url = check_url(target_url, name="target_url", allow_remote=remote)
    fmt = check_choice(capture_format, name="capture_format", choices=FORMATS)
    files = expand_capture(capture, name="capture") if local_capture else _pod_paths(capture)
    speed_value = _positive(
        speed, name="speed", expected="a number above 0 such as 1, 10 or 0.5", suffix="x"
    )
    rate_value = None
    if rate is not None:
        rate_value = _positive(
            rate,
            name="rate",
            expected="requests per second above 0, such as 2000 or '2000/s'",
            suffix="/s",
        )
    duration_value = None
    if duration is not None:
        duration_value = parse_duration(duration, name="duration")
        if duration_value <= 0:
            raise InvalidArgument("duration", duration, "a duration above zero such as '60s'")
    loop_value = check_bool(loop, name="loop")
    if loop_value and duration_value is None:
        raise InvalidArgument(
            "duration", duration, "a duration when loop is true (a looping replay must end)"
        )
    conc = check_int(concurrency, name="concurrency", minimum=1, maximum=MAX_CONCURRENCY)
    timeout_value = parse_duration(timeout, name="timeout", minimum=0.001)
    set_headers: list[tuple[str, str]] = []
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise InvalidArgument("headers", headers, "an object of header names to values")
        for key, val in headers.items():
            set_headers.append(
                (_header_name(key, name="headers"), _header_value(val, name=f"headers.{key}"))
            )
    removed: list[str] = []
    if remove_headers is not None:
        removed = [
            _header_name(h, name="remove_headers")
            for h in _str_list(remove_headers, name="remove_headers")
        ]
    method_list: tuple[str, ...] | None = None
    if methods is not None:
        items = _str_list(methods, name="methods")
        if not items:
            raise InvalidArgument("methods", methods, "at least one HTTP method, such as ['GET']")
        method_list = tuple(_header_name(m, name="methods").upper() for m in items)
    pattern: str | None = None
    if path_pattern is not None:
        if not isinstance(path_pattern, str):
            raise InvalidArgument("path_pattern", path_pattern, "a regular expression string")
        try:
            re.compile(path_pattern)
        except re.error as exc:
            raise InvalidArgument(
                "path_pattern", path_pattern, f"a valid regular expression ({exc})"
            ) from None
        pattern = path_pattern
    key = _session_key(session_key)
    worker_count = None
    if workers is not None:
        worker_count = check_int(workers, name="workers", minimum=1, maximum=MAX_WORKERS)
        worker_count = min(worker_count, conc)
    return ReplayOptions(
        files=tuple(files),
        capture_format=fmt,
        target_url=url,
        speed=speed_value,
        rate=rate_value,
        duration=duration_value,
        loop=loop_value,
        concurrency=conc,
        timeout=timeout_value,
        set_headers=tuple(set_headers),
        remove_headers=tuple(removed),
        methods=method_list,
        path_pattern=pattern,
        allow_remote=remote,
        session_key=key,
        workers=worker_count,
    )
