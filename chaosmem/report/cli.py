"""``chaosmem report`` and ``chaosmem gate``.

``report`` renders one journal, or several as a game day, to HTML, Markdown or JSON. ``gate``
is for CI: it prints one line per experiment and exits 1 unless every experiment passed by the
strict rules of :mod:`chaosmem.report.verdict` (which fail a run whose hypothesis was not met
*before* the method, where ``chaos run`` exits 0), optionally writing JUnit XML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.report import FORMATS, build_report, render
from chaosmem.report.crashed import crashed_run_journal

__all__ = ["register"]

_SUFFIX = {
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".json": "json",
}
_EXTENSION = {"html": ".html", "markdown": ".md", "json": ".json"}
_SYMBOL = {
    "passed": "PASSED",
    "deviated": "DEVIATED",
    "failed": "FAILED",
    "interrupted": "INTERRUPTED",
}


def _journals(values: list[str]) -> list[Path]:
    if not values:
        raise InvalidArgument("JOURNAL", values, "at least one journal file")
    return [Path(v) for v in values]


def _crashed(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The run named by ``--run``/``--state-dir`` (a run that left no journal), if any."""
    if args.run is None and args.state_dir is None:
        return []
    if args.state_dir is None:
        raise InvalidArgument("--state-dir", None, "the state dir of the run given with --run")
    state = Path(args.state_dir).expanduser().absolute()
    if not state.is_dir():
        raise InvalidArgument("--state-dir", str(state), "an existing chaosmem state directory")
    journal = crashed_run_journal(state, None if args.run in (None, "latest") else args.run)
    run = journal["extensions"][0]["run"]
    return [(f"{state}/runs/{run}", journal)]


def _format(args: argparse.Namespace) -> str:
    """``--format`` wins; else the extension of ``-o``; else HTML. A contradiction is refused."""
    guessed = (
        _SUFFIX.get(Path(args.output).suffix.lower())
        if args.output and args.output != "-"
        else None
    )
    if args.format and guessed and args.format != guessed:
        raise InvalidArgument(
            "--output",
            args.output,
            f"a file name ending in {_EXTENSION[args.format]} for --format {args.format}",
        )
    fmt: str = args.format or guessed or "html"
    return fmt


def _write(path: Path, text: str, name: str) -> None:
    if path.is_dir():
        raise InvalidArgument(name, str(path), "a file path, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(
            name, str(path), f"a file chaosmem can write ({exc.strerror})"
        ) from None


def _report(args: argparse.Namespace) -> int:
    crashed = _crashed(args)
    paths = [Path(v) for v in args.journals] if crashed else _journals(args.journals)
    fmt = _format(args)
    report = build_report(paths, redact_env=args.redact_env, crashed=crashed)
    for e in report["experiments"]:
        for warning in e["redaction_warnings"]:
            print(f"chaosmem report: {e['source']}: {warning}", file=sys.stderr)
    text = render(report, fmt)
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    names = [p.stem for p in paths] + [Path(source).name for source, _j in crashed]
    default = f"reports/{names[0] if len(names) == 1 else 'gameday'}{_EXTENSION[fmt]}"
    target = Path(args.output or default)
    _write(target, text, "--output")
    print(target)
    return 0


def _gate(args: argparse.Namespace) -> int:
    paths = _journals(args.journals)
    report = build_report(paths, redact_env=args.redact_env)
    if args.junit:
        _write(Path(args.junit), render(report, "junit"), "--junit")
    for e in report["experiments"]:
        status = e["verdict"]["status"]
        why = "; ".join(e["verdict"]["reasons"])
        print(f"{_SYMBOL[status]:<11} {e['title']} ({e['source']}): {why}")
        for warning in e["verdict"]["warnings"]:
            print(f"{'WARNING':<11} {e['title']}: {warning}")
    failing = sum(e["verdict"]["status"] != "passed" for e in report["experiments"])
    total = len(report["experiments"])
    print(
        f"gate {'FAILED' if failing else 'passed'}: {total - failing} of {total} experiments passed"
    )
    return 1 if failing else 0


def _common(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "journals",
        nargs="+" if required else "*",
        metavar="JOURNAL",
        help="journal files written by `chaos run`",
    )
    parser.add_argument(
        "--redact-env",
        action="append",
        default=[],
        metavar="NAME",
        help="also hide the value of this environment variable "
        "(a secret the experiment does not declare)",
    )


def register(subparsers: Any) -> None:
    """Add ``report`` and ``gate`` to the ``chaosmem`` command."""
    report = subparsers.add_parser(
        "report",
        help="render journals as an HTML, Markdown or JSON report",
        description="Render one journal, or several as a game-day summary. Secrets are redacted. "
        "A run that left no journal (SIGKILLed) is rendered from its timeline and the ledger "
        "with --state-dir DIR [--run RUN_ID], marked as interrupted.",
    )
    _common(report, required=False)
    report.add_argument(
        "--run",
        metavar="RUN_ID",
        help="a run of --state-dir that left no journal ('latest', the default, for the newest)",
    )
    report.add_argument(
        "--state-dir", help="the state dir of the run to render from its timeline and ledger"
    )
    report.add_argument(
        "-o", "--output", help="where to write it ('-' for stdout; default reports/NAME.html)"
    )
    report.add_argument(
        "--format",
        choices=FORMATS,
        help="html, markdown or json (default: from --output, else html)",
    )
    report.set_defaults(handler=_report)

    gate = subparsers.add_parser(
        "gate",
        help="exit non-zero unless every experiment passed (strict CI verdict)",
        description="Fail when any experiment deviated, failed, was interrupted, or its hypothesis "
        "was not met before the method (chaos run exits 0 then).",
    )
    _common(gate)
    gate.add_argument(
        "--junit",
        metavar="PATH",
        help="also write JUnit XML here (a test case per experiment and per probe)",
    )
    gate.set_defaults(handler=_gate)
