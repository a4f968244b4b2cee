"""Chaos Toolkit probes over PromQL: one value, the service's own status ratio, and OOM kills as
kube-state-metrics counts them.

Each takes the experiment's ``configuration`` (``prometheus_base_url``) and ``secrets``
(``prometheus_token`` or ``prometheus_username``/``prometheus_password``, ``prometheus_ca_bundle``)
and raises one of three errors: :class:`~chaosmem.prometheus.client.PrometheusUnreachable`,
:class:`~chaosmem.prometheus.client.PrometheusBadQuery` or
:class:`~chaosmem.prometheus.client.PrometheusEmpty`.
"""

from __future__ import annotations

import logging
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosmem.errors import InvalidArgument
from chaosmem.prometheus.client import (
    PrometheusEmpty,
    instant_query,
    one_value,
    settings_from,
)
from chaosmem.prometheus.promql import format_window, oom_killed_query, status_ratio_query
from chaosmem.validate import check_str

__all__ = ["oom_killed_count", "query_value", "status_ratio"]

logger = logging.getLogger("chaostoolkit")


def query_value(
    query: str,
    when: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The single number ``query`` gives at ``when`` (default now; a unix time or ISO-8601).

    The query must give one series or a scalar: aggregate a multi-series query yourself
    (``sum(...)``). No series, NaN or an infinity is an error, not 0: a probe that cannot see
    the service must not pass a tolerance by accident.
    """
    query = check_str(query, name="query")
    settings = settings_from(configuration, secrets)
    value = one_value(instant_query(settings, query, when), query)
    logger.info("chaosmem: prometheus %s = %g", query, value)
    return value


def status_ratio(
    status: Any = "503",
    metric: str = "http_requests_total",
    status_label: str = "code",
    selector: str = "",
    window: Any = "1m",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The share (0..1) of ``metric``'s request rate over ``window`` whose ``status_label`` is
    ``status`` ("503", a class "5xx", or a list), among the series ``selector`` matches.

    ``selector`` is PromQL label matchers without braces (``'job="orders",namespace="shop"'``).
    Served-no-such-status gives 0; no series at all, or no requests in the window, is
    :class:`PrometheusEmpty` — there is no ratio to speak of.
    """
    query = status_ratio_query(
        status=status,
        metric=metric,
        status_label=status_label,
        selector=selector,
        window=format_window(window),
    )
    settings = settings_from(configuration, secrets)
    value = one_value(instant_query(settings, query), query)
    logger.info("chaosmem: prometheus status %s ratio %.4f (%s)", status, value, query)
    return value


def oom_killed_count(
    namespace: str,
    pod_regex: str | None = None,
    container: str | None = None,
    window: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> int:
    """OOM kills in ``namespace`` (pods matching ``pod_regex``, one ``container``) from
    kube-state-metrics.

    With ``window`` ("10m"): the restarts within it of containers whose last termination is
    OOMKilled (restarts joined with ``kube_pod_container_status_last_terminated_reason``, as
    kubernetes-mixin does; see :func:`~chaosmem.prometheus.promql.oom_killed_query` for what this
    join can and cannot see). Without: the containers whose last termination is OOMKilled now.
    No kube-state-metrics series for the selection at all is :class:`PrometheusEmpty` (is
    kube-state-metrics scraped?), never a silent 0.
    """
    namespace = check_str(namespace, name="namespace")
    if pod_regex is not None:
        check_str(pod_regex, name="pod_regex")
    if container is not None:
        check_str(container, name="container")
    for name, value in (
        ("namespace", namespace),
        ("pod_regex", pod_regex),
        ("container", container),
    ):
        if value is not None and len(value) > 253:
            raise InvalidArgument(name, value, "at most 253 characters")
    query, presence = oom_killed_query(
        namespace=namespace,
        pod_regex=pod_regex,
        container=container,
        window=None if window is None else format_window(window),
    )
    settings = settings_from(configuration, secrets)
    result = instant_query(settings, query)
    if not result:
        if not instant_query(settings, presence):
            raise PrometheusEmpty(
                f"no kube-state-metrics series for namespace {namespace!r}"
                + (f", pods ~ {pod_regex!r}" if pod_regex else "")
                + (f", container {container!r}" if container else "")
                + ": is kube-state-metrics scraped by this Prometheus?"
            )
        count = 0
    else:
        # NB: increase() extrapolates to the window's edges, so 1 restart may read 1.2.
        count = round(one_value(result, query))
    logger.info("chaosmem: prometheus OOM kills in %s: %d (%s)", namespace, count, query)
    return count
