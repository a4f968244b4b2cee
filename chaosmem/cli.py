"""The ``chaosmem`` command: rollback, and the commands each concern registers.

Each concern keeps its command in its own ``cli.py`` with a ``register(subparsers)`` function
that adds a sub-parser whose ``handler`` default takes the parsed arguments and returns an exit
code. Errors chaosmem raises on purpose (:class:`ChaosmemError`) print as one line and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from chaosmem import __version__
from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.ledger import LEDGER_FILE, Ledger
from chaosmem.rollback import rollback
from chaosmem.state import state_dir

__all__ = ["COMMANDS", "COMMAND_MODULES", "main"]

#: Each sub-command and the module that adds it through ``register(subparsers)``. Only the
#: module of the command being run is imported: ``chaosmem replay`` does not load the report's
#: charts or the Prometheus client (half a second of start-up, which counts against a replay's
#: CPU per request). ``tests/test_cli.py`` checks the table against what the modules register.
COMMANDS: dict[str, str] = {
    "stress": "chaosmem.stress.cli",
    "replay": "chaosmem.traffic.cli",
    "native": "chaosmem.traffic.cli",
    "report": "chaosmem.report.cli",
    "gate": "chaosmem.report.cli",
    "gameday": "chaosmem.gameday.cli",
    "doctor": "chaosmem.doctor",
    "sweep": "chaosmem.gomem.cli",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


def _sweep_root(args: argparse.Namespace) -> Path:
    from chaosmem.targets.cgroup import Cgroup
    from chaosmem.targets.mounts import memory_cgroup_of

    if args.cgroup_root:
        return Cgroup.at(args.cgroup_root).path  # a memory cgroup directory, or a clear error
    return memory_cgroup_of("self")


def _rollback(args: argparse.Namespace) -> int:
    config = {"chaosmem_state_dir": args.state_dir} if args.state_dir else None
    # NB: a --state-dir must hold a ledger: a typo after a crash must not read as "nothing to
    # roll back" (and create an empty folder) while the real one's limits stay tight.
    directory = state_dir(config, create=not args.state_dir)
    if args.state_dir and not directory.is_dir():
        raise InvalidArgument(
            "--state-dir",
            str(directory),
            "the state directory of a chaosmem run; no such directory",
        )
    # NB: lexists: a ledger that is a directory or a symlink gets the ledger's own clear error
    if args.state_dir and not os.path.lexists(directory / LEDGER_FILE):
        raise InvalidArgument(
            "--state-dir",
            str(directory),
            f"the state directory of a chaosmem run; it holds no {LEDGER_FILE}, so chaosmem "
            "recorded no change there (is it the directory the run used?)",
        )
    torn = Ledger(directory).read().torn
    steps = rollback(directory, run=args.run, dry_run=args.dry_run)
    code = 1 if any(not s.ok for s in steps) else 0
    if torn:
        # NB: an unreadable line may have been an entry whose change is still in place.
        shown = ", ".join(str(n) for n in torn[:10]) + (" ..." if len(torn) > 10 else "")
        print(
            f"chaosmem rollback: {len(torn)} line(s) of {Ledger(directory).path} could not be "
            f"read (line {shown}); what they recorded may still be in place: run "
            "`chaosmem rollback --sweep` to find leftover services and stressors",
            file=sys.stderr,
        )
        code = 1
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "entry": s.entry.id,
                        "kind": s.entry.kind,
                        "target": s.entry.target,
                        "done": s.done,
                        "error": s.error,
                    }
                    for s in steps
                ],
                indent=2,
            )
        )
    elif not steps:
        print(f"nothing {'readable ' if torn else ''}to roll back in {directory}")
    for step in [] if args.json else steps:
        print(("FAILED " + step.error) if step.error else step.done)
    if args.sweep:
        from chaosmem.leftovers import sweep

        found = sweep(directory, root=_sweep_root(args), dry_run=args.dry_run)
        for line in found.ended + found.kept:
            print(line)
        for line in found.errors:
            print("FAILED " + line)
        code = 1 if found.errors else code
    return code


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (given the command line) the parser of its one command."""
    parser = argparse.ArgumentParser(
        prog="chaosmem", description="Memory-pressure chaos engineering for Chaos Toolkit."
    )
    parser.add_argument("--version", action="version", version=f"chaosmem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    undo = sub.add_parser(
        "rollback",
        help="undo every change chaosmem recorded and has not undone yet",
        description="Undo every open entry of the restore ledger, newest first. Safe to run twice.",
    )
    undo.add_argument(
        "--state-dir",
        help="the state directory (default: $CHAOSMEM_STATE_DIR or ~/.local/state/chaosmem)",
    )
    undo.add_argument("--run", help="only the entries of this run id")
    undo.add_argument(
        "--dry-run", action="store_true", help="print what would be undone, change nothing"
    )
    undo.add_argument("--json", action="store_true", help="print the steps as JSON")
    undo.add_argument(
        "--sweep",
        action="store_true",
        help="also find and end leftover chaosmem-* service cgroups and stressors under the "
        "cgroup root without the ledger (those of runs still going are left alone)",
    )
    undo.add_argument(
        "--cgroup-root",
        help="where --sweep looks (default: this process's memory cgroup, where start_service "
        "creates services unless chaosmem_cgroup_root says otherwise)",
    )
    undo.set_defaults(handler=_rollback)
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    command = words[0] if words else None
    wanted = (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES
    for name in wanted:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    try:
        code: int = args.handler(args)
    except ChaosmemError as exc:
        print(f"chaosmem {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
