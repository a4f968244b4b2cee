"""``chaosmem stress``: allocation stress from a shell.

With ``--target`` it goes through :func:`inject_allocation_stress` (ledger, the target's cgroup,
waits, prints the result as JSON). Without, it replaces itself with the engine, in the foreground
and in the caller's own cgroup, the way ``stress-ng --vm`` would run: this is also how a pod runs
it. Arguments are parsed and checked here, so the engine only ever sees bytes and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.state import state_dir
from chaosmem.stress.status import status_path
from chaosmem.stress.supervisor import EngineSpec

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stress",
        help="allocate memory at a controlled growth rate and fragmentation",
        description="Allocate SIZE bytes growing at RATE, touching every page, hold them, then release them. "
        "With --target the stressor runs inside that target's memory cgroup (recorded in the ledger) and the "
        "command waits for it; without, the engine runs here in the foreground.",
    )
    parser.add_argument("--size", required=True, help="e.g. 200Mi, or 90%% of the target's limit")
    parser.add_argument("--rate", help="growth rate, e.g. 50Mi/s (default: all at once)")
    parser.add_argument(
        "--fragmentation", default="0", help="share of bytes in small blocks, 0-1 (default 0)"
    )
    parser.add_argument(
        "--hold", help="how long to hold, e.g. 30s (default: until stopped, or 0 with --target)"
    )
    parser.add_argument("--release", choices=("all", "fragmented"), default="all")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing size and rate (with --target)"
    )
    parser.add_argument(
        "--respawn", action="store_true", help="restart a stressor the kernel OOM-killed"
    )
    parser.add_argument(
        "--target", help='a target object as JSON, e.g. \'{"type": "service", "name": "orders"}\''
    )
    parser.add_argument(
        "--allow-above-host",
        action="store_true",
        help="allow a size at or above the host's memory where no limit is below it",
    )
    parser.add_argument(
        "--allow-oom",
        action="store_true",
        help="without --target: allow a size above the limit of this command's own cgroup "
        "(the kernel then OOM-kills in the caller's session)",
    )
    parser.add_argument("--state-dir", help="the state directory (default: $CHAOSMEM_STATE_DIR)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config = {"chaosmem_state_dir": args.state_dir} if args.state_dir else None
    if args.target is not None:
        from chaosmem.stress.actions import inject_allocation_stress

        try:
            target = json.loads(args.target)
        except ValueError:
            raise InvalidArgument("--target", args.target, "a JSON target object") from None
        result = inject_allocation_stress(
            target, size=args.size, growth_rate=args.rate, fragmentation=args.fragmentation, hold=args.hold,
            workers=args.workers, wait=True, respawn=args.respawn, release=args.release,
            allow_above_host=args.allow_above_host, configuration=config,
        )  # fmt: skip
        print(json.dumps(result, indent=2))
        return 0
    from chaosmem.host import host_memory
    from chaosmem.stress.inject import check_size
    from chaosmem.units import parse_duration, parse_fraction, parse_rate, parse_size

    spec = EngineSpec(
        size=parse_size(args.size, name="--size", minimum=1),
        rate=parse_rate(args.rate, name="--rate") if args.rate else None,
        fragmentation=parse_fraction(args.fragmentation, name="--fragmentation"),
        hold=parse_duration(args.hold, name="--hold") if args.hold else None,
        release=args.release,
    )
    # NB: the same checks as the action, with this process's own cgroup as the target.
    check_size(
        spec.size, value=args.size, limit=_own_limit(), host=host_memory(), rate=spec.rate,
        allow_above_host=args.allow_above_host, own_cgroup=True, allow_oom=args.allow_oom,
        name="--size",
    )  # fmt: skip
    stressor_id = uuid.uuid4().hex[:12]
    argv = spec.argv(
        stressor_id=stressor_id, status=status_path(state_dir(config), stressor_id), parent_fd=-1, deadline=None,
        meta={"cgroup": _own_cgroup()},
    )  # fmt: skip
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # pragma: no cover - execv does not return


def _own_limit() -> int | None:
    """The memory limit of this process's own cgroup (None: none, or no memory cgroup)."""
    from chaosmem.errors import ChaosmemError
    from chaosmem.targets.cgroup import Cgroup

    try:
        return Cgroup.of_process("self").memory_limit()
    except (ChaosmemError, OSError):
        return None


def _own_cgroup() -> str | None:
    """Where the foreground engine's pages are charged: this process's memory cgroup directory."""
    from chaosmem.errors import ChaosmemError
    from chaosmem.targets.mounts import memory_cgroup_of

    try:
        return str(memory_cgroup_of("self"))
    except (ChaosmemError, OSError):
        return None
