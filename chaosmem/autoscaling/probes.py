"""Probes: the HPA's reaction time to the experiment, and its replicas now."""

from __future__ import annotations

from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import InvalidArgument
from chaosmem.ledger import Ledger, current_run
from chaosmem.state import state_dir
from chaosmem.timestamps import parse_iso
from chaosmem.units import parse_duration
from chaosmem.validate import check_choice, check_str

__all__ = ["autoscaling_reaction_time", "replicas"]

UNTIL = ("ready", "scaled")


def _since(since: object, configuration: Configuration) -> float:
    """``since`` as unix seconds; by default the run's first chaosmem change (ledger entry)."""
    if since is None:
        run = current_run()
        entries = [e for e in Ledger(state_dir(configuration)).read().entries if e.run == run]
        if run is None or not entries:
            raise InvalidArgument(
                "since",
                since,
                "a time (unix seconds or ISO 8601) when no chaosmem action of this run changed "
                "anything yet (the default is the run's first change)",
            )
        return min(e.at for e in entries)
    if isinstance(since, int | float) and not isinstance(since, bool) and 0 < since < 1e11:
        return float(since)
    if (moment := parse_iso(since)) is not None:
        return moment.timestamp()
    raise InvalidArgument(
        "since", since, "unix seconds or an ISO 8601 time such as '2026-01-02T03:04:05Z'"
    )


def autoscaling_reaction_time(
    namespace: str,
    hpa: str,
    since: float | str | None = None,
    timeout: str | float = "2m",
    until: str = "ready",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float | None:
    """Seconds from ``since`` (default: the run's first chaosmem change) until HPA ``hpa``
    scaled up (its ``lastScaleTime`` / ``SucceededRescale`` condition) and, with
    ``until="ready"``, its Deployment has that many Ready pods (their Ready condition's
    ``lastTransitionTime``); null when that did not happen within ``timeout`` of ``since``.

    Use it in a steady-state hypothesis or a method probe with a tolerance such as
    ``{"type": "range", "range": [0, 120]}``.
    """
    from chaosmem.kube.client import connect
    from chaosmem.kube.hpa import reaction_time
    from chaosmem.targets.kubernetes import client_settings

    ns = check_str(namespace, name="namespace")
    name = check_str(hpa, name="hpa")
    wait = parse_duration(timeout, name="timeout")
    mode = check_choice(until, name="until", choices=UNTIL)
    start = _since(since, configuration)
    api = connect(secrets or client_settings(configuration))
    return reaction_time(api, ns, name, since=start, timeout=wait, until=mode)


def replicas(
    namespace: str,
    hpa: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """The HPA's ``current`` and ``desired`` replicas and how many target pods are ``ready``,
    with a one-line ``summary`` for the report ("HPA shop/orders: 5 current, 5 desired, 5 ready").

    The run's timeline samples the same figures every tick when
    ``configuration["chaosmem_hpa"]`` names an HPA (``{"namespace": "shop", "name": "orders"}``).
    """
    from chaosmem.kube.client import connect
    from chaosmem.kube.hpa import read_replicas
    from chaosmem.targets.kubernetes import client_settings

    ns = check_str(namespace, name="namespace")
    name = check_str(hpa, name="hpa")
    found = dict(read_replicas(connect(secrets or client_settings(configuration)), ns, name))
    summary = ", ".join(f"{found[key]} {key}" for key in ("current", "desired", "ready"))
    return {**found, "summary": f"HPA {ns}/{name}: {summary}"}
