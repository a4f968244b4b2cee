"""Run Debian's ``prometheus`` on 127.0.0.1 for tests and ``make demo`` (standard library only).

    handle = start(["127.0.0.1:8080"], workdir)          # job "orders", 1 s scrape
    handle = start({"orders": ["127.0.0.1:8080"], "ksm": ["127.0.0.1:9100"]}, workdir)
    handle.url    # "http://127.0.0.1:PORT"
    handle.stop() # SIGTERM by PID, SIGKILL after a grace period

    python demo/prometheus.py start --workdir DIR --target 127.0.0.1:8080 [--target job=host:port]
    python demo/prometheus.py stop --workdir DIR

A target is ``host:port`` (scraped at ``/metrics``) or ``http://host:port/path``; only loopback
hosts are accepted. The server writes its config, TSDB, log, PID and URL under ``workdir``, listens
on a free port of 127.0.0.1, and is stopped by the PID it recorded — after checking that the PID
still runs *this* workdir's prometheus, so a reused PID is never signalled.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PrometheusError", "PrometheusHandle", "start", "stop_workdir"]

READY_TIMEOUT = 60.0
STOP_GRACE = 10.0


class PrometheusError(RuntimeError):
    """Prometheus could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class _Target:
    job: str
    address: str
    path: str


@dataclass
class PrometheusHandle:
    """A running Prometheus; ``stop()`` is idempotent."""

    url: str
    pid: int
    workdir: Path
    #: The server's Popen when this process started it: reaped on stop (a dropped Popen of a
    #: running child is a ResourceWarning, and a zombie once it is ended by pid).
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def stop(self) -> None:
        _stop(self.pid, self.workdir)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_GRACE)

    def __enter__(self) -> PrometheusHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse_target(job: str, text: str) -> _Target:
    if not isinstance(text, str) or not text or len(text) > 512:
        raise PrometheusError(
            f"scrape target {text!r}: expected host:port or http://host:port/path"
        )
    url = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    if url.scheme != "http" or not url.hostname or url.port is None:
        raise PrometheusError(
            f"scrape target {text!r}: expected host:port or http://host:port/path"
        )
    if not _loopback(url.hostname):
        raise PrometheusError(
            f"scrape target {text!r}: only loopback hosts (127.0.0.1) are scraped"
        )
    return _Target(job=job, address=f"{url.hostname}:{url.port}", path=url.path or "/metrics")


def _targets(scrape_targets: Mapping[str, Sequence[str]] | Sequence[str]) -> list[_Target]:
    if isinstance(scrape_targets, str):
        raise PrometheusError("scrape_targets: expected a list of host:port or a {job: [...]} map")
    jobs = (
        dict(scrape_targets)
        if isinstance(scrape_targets, Mapping)
        else {"orders": list(scrape_targets)}
    )
    out: list[_Target] = []
    for job, items in jobs.items():
        if not isinstance(job, str) or not job.replace("_", "").replace("-", "").isalnum():
            raise PrometheusError(f"job {job!r}: expected letters, digits, '-' or '_'")
        if isinstance(items, str):
            items = [items]
        out.extend(_parse_target(job, t) for t in items)
    return out


def _config(targets: list[_Target], interval: str) -> str:
    """The YAML config, written as JSON (YAML is a superset), one scrape job per (job, path)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for t in targets:
        groups.setdefault((t.job, t.path), []).append(t.address)
    jobs = []
    for (job, path), addresses in groups.items():
        name = job if sum(1 for j, _ in groups if j == job) == 1 else f"{job}{path}"
        jobs.append(
            {
                "job_name": name,
                "metrics_path": path,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": addresses, "labels": {"job": job}}],
            }
        )
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }
    return json.dumps(config, indent=2) + "\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_ours(pid: int, workdir: Path) -> bool:
    """True when ``pid`` is a live prometheus started with this workdir's config."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    config = f"--config.file={workdir.resolve() / 'prometheus.yml'}".encode()
    return config in argv


def _stop(pid: int, workdir: Path) -> None:
    if _is_ours(pid, workdir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while _is_ours(pid, workdir) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _is_ours(pid, workdir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _reap(pid)
    for name in ("prometheus.pid", "prometheus.url"):
        with contextlib.suppress(FileNotFoundError):
            (workdir / name).unlink()


def _reap(pid: int) -> None:
    """Collect our own child so it does not linger as a zombie (not our child: nothing to do)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # deprecated, gone in Python 3.13: basic auth is a test-only feature
        except ImportError:
            raise PrometheusError("basic_auth needs the crypt module (Python < 3.13)") from None
        return str(crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH)))


def _ready(url: str, headers: Mapping[str, str]) -> bool:
    request = urllib.request.Request(f"{url}/-/ready", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def start(
    scrape_targets: Mapping[str, Sequence[str]] | Sequence[str],
    workdir: str | os.PathLike[str],
    *,
    interval: str = "1s",
    binary: str | None = None,
    ready_timeout: float = READY_TIMEOUT,
    basic_auth: tuple[str, str] | None = None,
) -> PrometheusHandle:
    """Start a Prometheus scraping ``scrape_targets`` every ``interval``; return when it is ready.

    ``workdir`` holds everything the server writes (``data/`` TSDB, ``prometheus.yml``,
    ``prometheus.log``, ``prometheus.pid``, ``prometheus.url``); a workdir whose server still
    runs is refused rather than shared. ``basic_auth`` (user, password) protects every endpoint
    with HTTP basic auth through Prometheus' web config (the tests of authenticated queries).
    """
    targets = _targets(scrape_targets)
    if not isinstance(interval, str) or not re.fullmatch(r"[1-9][0-9]{0,4}(ms|s|m)", interval):
        raise PrometheusError(f"interval {interval!r}: expected a Prometheus duration such as 1s")
    exe = binary or shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(exe).is_file():
        raise PrometheusError(
            "prometheus: binary not found; install the Debian package (`make deps`, or "
            "apt-get install prometheus) without starting its system service"
        )
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    pidfile = work / "prometheus.pid"
    with contextlib.suppress(OSError, ValueError):
        old = int(pidfile.read_text())
        if _is_ours(old, work):
            raise PrometheusError(f"workdir {work}: a prometheus (pid {old}) already runs there")
    (work / "prometheus.yml").write_text(_config(targets, interval), encoding="utf-8")
    extra: list[str] = []
    auth_header: dict[str, str] = {}
    if basic_auth is not None:
        user, password = basic_auth
        web = {"basic_auth_users": {user: _bcrypt(password)}}
        (work / "web.yml").write_text(json.dumps(web) + "\n", encoding="utf-8")
        extra.append(f"--web.config.file={work / 'web.yml'}")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        auth_header["Authorization"] = f"Basic {token}"
    for attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = (work / "prometheus.log").open("ab")
        try:
            proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1d",
                    "--web.console.templates=/dev/null",
                    "--web.console.libraries=/dev/null",
                    "--log.level=warn",
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        pidfile.write_text(f"{proc.pid}\n", encoding="utf-8")
        handle = PrometheusHandle(url=url, pid=proc.pid, workdir=work, proc=proc)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(url, auth_header):
                (work / "prometheus.url").write_text(url + "\n", encoding="utf-8")
                return handle
            time.sleep(0.1)
        handle.stop()
        proc.wait(timeout=STOP_GRACE)
        if attempt == 2 or proc.returncode is None or b"bind" not in _tail(work / "prometheus.log"):
            break
    raise PrometheusError(
        f"prometheus did not become ready within {ready_timeout:.0f}s; see {work / 'prometheus.log'}:\n"
        + _tail(work / "prometheus.log").decode(errors="replace")
    )


def _tail(path: Path, size: int = 2000) -> bytes:
    try:
        data = path.read_bytes()
    except OSError:
        return b""
    return data[-size:]


def stop_workdir(workdir: str | os.PathLike[str]) -> bool:
    """Stop the prometheus recorded in ``workdir``; False when none was running."""
    work = Path(workdir).resolve()
    try:
        pid = int((work / "prometheus.pid").read_text())
    except (OSError, ValueError):
        return False
    running = _is_ours(pid, work)
    _stop(pid, work)
    return running


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start a server; print its URL")
    p_start.add_argument("--workdir", required=True)
    p_start.add_argument(
        "--target",
        action="append",
        required=True,
        help="host:port, http://host:port/path, or job=host:port (default job: orders)",
    )
    p_start.add_argument("--interval", default="1s")
    p_stop = sub.add_parser("stop", help="stop the server recorded in --workdir")
    p_stop.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            jobs: dict[str, list[str]] = {}
            for text in args.target:
                job, sep, target = text.partition("=")
                if not sep:
                    job, target = "orders", text
                jobs.setdefault(job, []).append(target)
            handle = start(jobs, args.workdir, interval=args.interval)
            print(handle.url)
        else:
            stopped = stop_workdir(args.workdir)
            print("stopped" if stopped else "not running")
    except PrometheusError as exc:
        print(f"prometheus: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
