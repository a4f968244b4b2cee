"""``chaosmem gameday PLAN.yaml``: run a plan now, or render it as a CronJob or systemd units."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.gameday.plan import load_plan
from chaosmem.gameday.runner import run_plan
from chaosmem.gameday.schedule import render_cronjob, render_systemd
from chaosmem.state import state_dir

__all__ = ["register"]


def _write_units(units: dict[str, str], output: str | None) -> None:
    if output is None or output == "-":
        for name, text in units.items():
            sys.stdout.write(f"# ---- {name}\n{text}")
        return
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise InvalidArgument("--output", output, "a directory for the unit files")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (folder / name).write_text(text, encoding="utf-8")
        print(folder / name)


def _gameday(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    if args.cronjob and args.systemd:
        raise InvalidArgument("--cronjob", True, "either --cronjob or --systemd, not both")
    config = {"chaosmem_state_dir": args.state_dir} if args.state_dir else None
    if args.cronjob:
        text = render_cronjob(plan, image=args.image, schedule=args.schedule)
        if args.output and args.output != "-":
            Path(args.output).write_text(text, encoding="utf-8")
            print(args.output)
        else:
            sys.stdout.write(text)
        return 0
    if args.systemd:
        units = render_systemd(
            plan,
            reports=Path(args.reports),
            state_dir=state_dir(config, create=False),
            schedule=args.schedule,
        )
        _write_units(units, args.output)
        return 0
    if args.dry_run:
        for run in plan.runs:
            print(f"[{run.index + 1}/{len(plan.runs)}] {run.label}: {run.experiment} {run.vars}")
        return 0
    result = run_plan(plan, reports=Path(args.reports), state_base=state_dir(config) / "gamedays")
    verdict = "passed" if result.ok else "FAILED"
    print(
        f"game day {plan.name} {verdict}: report {result.files['html']} (JUnit {result.files['junit']})"
    )
    return 0 if result.ok else 1


def register(subparsers: Any) -> None:
    """Add ``gameday`` to the ``chaosmem`` command."""
    parser = subparsers.add_parser(
        "gameday",
        help="run a game-day plan (experiments in order, restored in between), or schedule it",
        description="Run every experiment of a YAML plan in order with its variables (a grid "
        "expands into runs), restore everything between experiments, stop on a safety failure, "
        "and write one summary report plus JUnit. With --cronjob or --systemd, print the "
        "schedule instead of running.",
    )
    parser.add_argument("plan", metavar="PLAN", help="the plan file (YAML)")
    parser.add_argument(
        "--reports", default="reports", help="where reports go, in a folder named for the plan"
    )
    parser.add_argument(
        "--state-dir",
        help="the state directory (default: $CHAOSMEM_STATE_DIR or ~/.local/state/chaosmem)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    parser.add_argument(
        "--cronjob", action="store_true", help="print a Kubernetes CronJob that runs the plan"
    )
    parser.add_argument(
        "--systemd", action="store_true", help="print a systemd service and timer for the plan"
    )
    parser.add_argument("--image", help="the container image of the CronJob (with chaosmem)")
    parser.add_argument("--schedule", help="a cron schedule overriding the plan's")
    parser.add_argument("-o", "--output", help="write the CronJob file / unit folder here")
    parser.set_defaults(handler=_gameday)
