"""``chaosmem replay CAPTURE --target URL``: replay a capture from the shell, print the summary.

The same validation and engine as the ``replay_traffic`` activity (in the foreground), so a
capture can be tried against a local service before it goes into an experiment.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.state import state_dir
from chaosmem.traffic.options import DEFAULT_CONCURRENCY, parse_options
from chaosmem.traffic.replay import run_replay
from chaosmem.traffic.results import replay_dir

__all__ = ["format_summary", "register"]


def _headers(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    headers: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise InvalidArgument("--header", value, "'Name: value'")
        headers[name.strip()] = rest.strip()
    return headers


def _run(args: argparse.Namespace) -> int:
    options = parse_options(
        capture=args.capture,
        target_url=args.target,
        speed=args.speed if args.speed is not None else 1.0,
        rate=args.rate,
        duration=args.duration,
        loop=args.loop,
        concurrency=args.concurrency,
        timeout=args.timeout,
        headers=_headers(args.header),
        remove_headers=args.remove_header,
        methods=args.method,
        path_pattern=args.path_pattern,
        allow_remote=args.allow_remote,
        capture_format=args.format,
        session_key=args.session_key,
        workers=args.workers,
    )
    state = state_dir({"chaosmem_state_dir": args.state_dir} if args.state_dir else None)
    summary = run_replay(options, state=state, progress=not args.json)
    summary.pop("histograms", None)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(format_summary(summary, results=str(replay_dir(state, summary["replay_id"]))))
    if not summary["completed"]:
        print(
            f"chaosmem replay: no request got an answer ({summary['sent']} sent, "
            f"{summary['no_status']} without status): is {args.target} up?",
            file=sys.stderr,
        )
        return 1
    return 0 if summary["state"] == "done" else 1


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.2f}%" if total else "-"


def format_summary(summary: dict[str, Any], *, results: str) -> str:
    """A few lines a person reads after a replay."""
    sent, answered = summary["sent"], summary["completed"]
    finished = answered + summary["no_status"]
    lat, lag, cap = summary["latency_ms"], summary["lag_ms"], summary["capture"]
    status = ", ".join(f"{code} {n} ({_pct(n, answered)})" for code, n in summary["status"].items())
    errors = ", ".join(
        f"{name} {n} ({_pct(n, finished)})" for name, n in summary["errors"].items() if n
    )
    lines = [
        f"replay {summary['replay_id']} {summary['state']} in {summary['duration_s']:.2f}s: "
        f"{sent} sent, {answered} answered, {summary['no_status']} without status",
        f"  status   {status or '-'}",
        f"  errors   {errors or 'none'}",
        f"  rate     {summary['req_per_s']} req/s   latency ms p50 {lat['p50']} p90 {lat['p90']} "
        f"p99 {lat['p99']} max {lat['max']}   schedule lag ms p99 {lag['p99']} max {lag['max']}",
        f"  capture  {len(cap['files'])} file(s), {cap['records']} records, {cap['requests']} "
        f"requests, {cap['skipped_responses']} responses skipped, {cap['malformed']} malformed, "
        f"{summary['filtered']} filtered out",
    ]
    lines += [
        f"    malformed: {m['position']}: {m['reason']}" for m in cap["malformed_samples"][:5]
    ]
    if summary.get("error"):
        lines.append(f"  error    {summary['error']}")
    lines.append(f"  results  {results}")
    return "\n".join(lines)


def _native(args: argparse.Namespace) -> int:
    from chaosmem.traffic.native import build, status

    usable, why = status()
    if args.check or usable:
        print(f"compiled replay engine: {'in use' if usable else 'not in use'} ({why})")
        return 0 if usable or not args.check else 1
    built, what = build()
    print(f"compiled replay engine: {what}" if built else f"not compiled: {what}")
    # NB: not compiling is not a failure: the interpreted engine does the same work, slower
    return 0


def register(subparsers: Any) -> None:
    native = subparsers.add_parser(
        "native",
        help="compile the replay engine with mypyc (make setup does it), or --check it",
        description="Compile chaosmem's replay engine (chaosmem/traffic/native.py says what and "
        "why) unless an up-to-date build exists; without mypy or a C compiler, say why and exit 0.",
    )
    native.add_argument(
        "--check", action="store_true", help="only say whether it is in use (exit 1 if not)"
    )
    native.set_defaults(handler=_native)
    parser = subparsers.add_parser(
        "replay",
        help="replay captured traffic (goreplay .gor, HAR, JSON lines) against a target",
        description="Replay a capture against TARGET, at the recorded pace divided by --speed or "
        "at a fixed --rate, and print the summary (also written to the state dir).",
    )
    parser.add_argument("capture", nargs="+", metavar="CAPTURE", help="capture file(s) or glob(s)")
    parser.add_argument("--target", required=True, metavar="URL", help="where every request goes")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--speed", metavar="N", help="divide the recorded gaps by N (default 1)")
    pace.add_argument(
        "--rate", metavar="N", help="send N requests per second, ignoring recorded times"
    )
    parser.add_argument("--duration", metavar="D", help="stop sending after D ('90s', '2m')")
    parser.add_argument("--loop", action="store_true", help="repeat the capture (needs --duration)")
    parser.add_argument(
        "--concurrency", default=DEFAULT_CONCURRENCY, metavar="N", help="connections at most"
    )
    parser.add_argument(
        "--timeout", default="5s", metavar="D", help="per-request timeout (default 5s)"
    )
    parser.add_argument("--header", action="append", metavar="'NAME: VALUE'", help="set a header")
    parser.add_argument("--remove-header", action="append", metavar="NAME", help="remove a header")
    parser.add_argument(
        "--method", action="append", metavar="M", help="only requests with method M"
    )
    parser.add_argument("--path-pattern", metavar="REGEX", help="only requests whose path matches")
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a target outside loopback"
    )
    parser.add_argument(
        "--workers", metavar="N", help="worker processes (default: the cores available)"
    )
    parser.add_argument(
        "--session-key",
        metavar="KEY",
        help="header (X-Session-Id) or cookie:NAME whose requests stay on one worker, in order",
    )
    parser.add_argument("--format", default="auto", choices=("auto", "gor", "har", "jsonl"))
    parser.add_argument("--state-dir", help="the state directory (default: $CHAOSMEM_STATE_DIR)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_run)
