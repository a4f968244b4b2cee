"""``chaosmem sweep``: one experiment over a grid of settings (see :mod:`chaosmem.gomem.sweep`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from chaosmem.gomem.sweep import parse_grid, run_sweep

__all__ = ["register"]


def _sweep(args: argparse.Namespace) -> int:
    grid = parse_grid(args.grid)
    experiment = Path(args.experiment)
    out = Path(args.out) if args.out else Path("reports") / f"sweep-{experiment.stem}"
    rows = run_sweep(experiment, grid, out)
    print(f"summary: {out / 'summary.html'} ({len(rows)} runs)")
    return 0 if all(r.journal for r in rows) else 1


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sweep",
        help="run an experiment once per combination of --var settings and summarise",
        description="Run `chaos run --var NAME=VALUE …` for every combination of the --grid "
        "values, in order, and write summary.{json,md,html} with peak memory, OOM kills, the "
        "503 ratio and Go's heap per setting. Exit 1 when a run left no journal.",
    )
    parser.add_argument("experiment", help="the experiment file, e.g. experiments/gogc-sweep.json")
    parser.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="NAME=V1,V2",
        help="a configuration variable and its values (repeat for more axes)",
    )
    parser.add_argument("-o", "--out", help="output folder (default reports/sweep-<experiment>)")
    parser.set_defaults(handler=_sweep)
