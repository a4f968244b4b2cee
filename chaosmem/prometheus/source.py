"""The ``prometheus`` timeline source: chosen PromQL queries, evaluated every tick.

Enabled by the control argument ``prometheus_queries``, a map of names to queries, e.g. the
service's own 503 ratio to chart beside the replay's::

    "arguments": {"prometheus_queries": {
        "orders_503_ratio": "sum(rate(http_requests_total{job=\\"orders\\",code=\\"503\\"}[10s])) / sum(rate(http_requests_total{job=\\"orders\\"}[10s]))"}}

Each sample is ``{name: value}``; a query that has no value this tick (no series yet, NaN, the
server slow) gives ``None`` and its error once under ``"errors"``. Queries run with a 2 s timeout
so a slow Prometheus delays the tick by at most that. The server and credentials come from the
experiment's configuration and secrets, as for the probes.
"""

from __future__ import annotations

import math
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.prometheus.client import (
    PrometheusError,
    PrometheusSettings,
    instant_query,
    one_value,
    settings_from,
)
from chaosmem.timeline.sources import SourceSetup, register_source
from chaosmem.validate import check_mapping, check_name

__all__ = ["PrometheusSource", "parse_queries"]

MAX_QUERIES = 20


def parse_queries(value: object) -> dict[str, str]:
    """The control's ``prometheus_queries`` argument, validated ({} when absent)."""
    if value is None:
        return {}
    queries = check_mapping(value, name="prometheus_queries")
    if len(queries) > MAX_QUERIES:
        raise InvalidArgument(
            "prometheus_queries", f"{len(queries)} queries", f"at most {MAX_QUERIES}"
        )
    out: dict[str, str] = {}
    for name, query in queries.items():
        check_name(name, name="prometheus_queries key")
        if not isinstance(query, str) or not query.strip() or len(query) > 10_000:
            raise InvalidArgument(f"prometheus_queries.{name}", query, "a PromQL expression")
        out[name] = query
    return out


class PrometheusSource:
    key = "prometheus"

    def __init__(self, settings: PrometheusSettings, queries: dict[str, str]) -> None:
        self.settings = settings
        self.queries = queries
        self.reported: dict[str, str] = {}

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, query in self.queries.items():
            try:
                value = one_value(instant_query(self.settings, query), query, allow_nan=True)
                out[name] = value if math.isfinite(value) else None
            except PrometheusError as exc:
                out[name] = None
                if self.reported.get(name) != str(exc):
                    self.reported[name] = errors[name] = str(exc)
        if errors:
            out["errors"] = errors
        return out


@register_source("prometheus")
def _prometheus(setup: SourceSetup) -> PrometheusSource | None:
    queries = parse_queries(setup.extra.get("prometheus_queries"))
    if not queries:
        return None
    settings = settings_from(setup.configuration, setup.extra.get("secrets"), timeout=2.0)
    return PrometheusSource(settings, queries)
