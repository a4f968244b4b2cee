"""chaosmem: memory-pressure chaos engineering for Chaos Toolkit.

Tighten a target's memory limit, replay captured production traffic, inject allocation stress at
a controlled rate, and prove with probes whether the service was OOM-killed, served 503s or
autoscaled in time. Every change is written to a restore ledger first (see ``chaosmem.ledger``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaoslib.types import DiscoveredActivities, Discovery

__all__ = ["ACTIVITY_MODULES", "__version__", "discover"]

try:
    __version__ = version("chaosmem")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

#: Every module that holds activities; each is ``actions`` or ``probes`` by its name.
ACTIVITY_MODULES = (
    "chaosmem.autoscaling.probes",
    "chaosmem.limits.actions",
    "chaosmem.limits.probes",
    "chaosmem.local.actions",
    "chaosmem.stress.actions",
    "chaosmem.stress.probes",
    "chaosmem.traffic.actions",
    "chaosmem.traffic.probes",
    "chaosmem.prometheus.probes",
    "chaosmem.gomem.probes",
    "chaosmem.safeguards.probes",
)


def discover(discover_system: bool = True) -> Discovery:
    """What ``chaos discover chaosmem`` lists: every activity with its arguments."""
    # NB: chaoslib is imported here, not above: every chaosmem command and worker process
    # imports this package, and only discovery needs it (a tenth of a second of start-up)
    from chaoslib.discovery.discover import initialize_discovery_result

    discovery = initialize_discovery_result("chaosmem", __version__, "memory")
    discovery["activities"].extend(load_exported_activities())
    return discovery


def load_exported_activities() -> list[DiscoveredActivities]:
    from chaoslib.discovery.discover import discover_actions, discover_probes

    activities: list[DiscoveredActivities] = []
    for module in ACTIVITY_MODULES:
        if module.endswith(".actions"):
            activities.extend(discover_actions(module))
        else:
            activities.extend(discover_probes(module))
    return activities
