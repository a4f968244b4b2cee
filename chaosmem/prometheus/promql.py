"""PromQL built from validated pieces: metric and label names, label matchers, status classes,
windows. Nothing a user passes is pasted into a query unchecked, so a selector cannot close a
brace and append its own expression.
"""

from __future__ import annotations

import re
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.units import parse_duration

__all__ = [
    "MAX_QUERY",
    "format_window",
    "label_matchers",
    "metric_name",
    "oom_killed_query",
    "parse_selector",
    "quote",
    "status_matcher",
    "status_ratio_query",
]

MAX_QUERY = 10_000
MAX_SELECTOR = 2_000
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,199}")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,99}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]{0,99})\s*(=~|!~|!=|=)\s*"((?:[^"\\\n]|\\.)*)"\s*')
_STATUS_EXPECTED = "an HTTP status such as '503', a class such as '5xx', or a list of them"


def metric_name(value: object, *, name: str) -> str:
    if not isinstance(value, str) or not _METRIC.fullmatch(value):
        raise InvalidArgument(name, value, "a Prometheus metric name such as http_requests_total")
    return value


def label_name(value: object, *, name: str) -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value) or value.startswith("__"):
        raise InvalidArgument(name, value, "a Prometheus label name such as code")
    return value


def quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def parse_selector(value: object, *, name: str = "selector") -> list[tuple[str, str, str]]:
    """``'job="orders", namespace=~"shop|cart"'`` -> [(label, op, raw quoted body), …].

    Label matchers without braces, as they appear inside ``{}``; an empty string matches all.
    """
    expected = 'PromQL label matchers without braces, such as \'job="orders",namespace="shop"\''
    if not isinstance(value, str) or len(value) > MAX_SELECTOR:
        raise InvalidArgument(name, value, expected)
    text = value.strip().rstrip(",")
    if not text:
        return []
    matchers: list[tuple[str, str, str]] = []
    pos = 0
    while True:
        match = _MATCHER.match(text, pos)
        if not match:
            raise InvalidArgument(name, value, expected)
        matchers.append((match.group(1), match.group(2), match.group(3)))
        pos = match.end()
        if pos == len(text):
            return matchers
        if text[pos] != ",":
            raise InvalidArgument(name, value, expected)
        pos += 1


def label_matchers(*parts: list[tuple[str, str, str]]) -> str:
    """``{a="x",b=~"y"}`` from parsed matchers (their bodies already escaped)."""
    items = [f'{label}{op}"{body}"' for group in parts for label, op, body in group]
    return "{" + ",".join(items) + "}"


def status_matcher(status: Any, label: str) -> tuple[str, str, str]:
    """``"503"`` -> code="503"; ``"5xx"`` -> code=~"5.."; a list -> code=~"503|5..".

    Ints are taken too (503), since experiment authors write both.
    """
    items = status if isinstance(status, list | tuple) else [status]
    if not items or len(items) > 50:
        raise InvalidArgument("status", status, _STATUS_EXPECTED)
    patterns: list[str] = []
    for item in items:
        text = "" if isinstance(item, bool) else str(item).strip().lower()
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            patterns.append(text[0] + "..")
        elif len(text) == 3 and text.isdigit() and 100 <= int(text) <= 599:
            patterns.append(text)
        else:
            raise InvalidArgument("status", status, _STATUS_EXPECTED)
    if len(patterns) == 1 and "." not in patterns[0]:
        return (label, "=", patterns[0])
    return (label, "=~", "|".join(patterns))


def format_window(value: object, *, name: str = "window") -> str:
    """A PromQL range from a chaosmem duration: ``"1m"``/``60`` -> ``"60s"``, ``"1.5s"`` ->
    ``"1500ms"``. At least 1 s (a rate needs two scrapes) and at most 30 days."""
    seconds = parse_duration(value, name=name, minimum=1.0)
    if seconds > 30 * 86400:
        raise InvalidArgument(name, value, "a duration of at most 30 days")
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def status_ratio_query(
    *, status: Any, metric: str, status_label: str, selector: str, window: str
) -> str:
    """sum(rate(matching status)) / sum(rate(all)), with ``or vector(0)`` on the numerator so a
    service that served no such status gives 0 rather than nothing."""
    name = metric_name(metric, name="metric")
    label = label_name(status_label, name="status_label")
    base = parse_selector(selector)
    if any(lbl == label for lbl, _, _ in base):
        raise InvalidArgument("selector", selector, f"matchers without the {label!r} label")
    match = status_matcher(status, label)
    return (
        f"(sum(rate({name}{label_matchers(base, [match])}[{window}])) or vector(0))"
        f" / sum(rate({name}{label_matchers(base)}[{window}]))"
    )


def oom_killed_query(
    *, namespace: str, pod_regex: str | None, container: str | None, window: str | None
) -> tuple[str, str]:
    """(the count query, a presence query for its series).

    kube-state-metrics' ``kube_pod_container_status_last_terminated_reason{reason="OOMKilled"}``
    is a 0/1 gauge of the *last* termination only; the restarts counter says how many times the
    container died. As kubernetes-mixin's alerts do, restarts are joined on (namespace, pod,
    container) with the reason: with a window, the restarts within it of the containers whose
    last termination is OOMKilled at query time; without one, the containers whose last
    termination is OOMKilled (one each). The reason is read as an instant vector on purpose: KSM
    drops the old reason's series when it changes, and an instant selector honours that
    staleness, where ``max_over_time`` would still count a container whose later restart had
    another cause. (Missed: an OOM kill followed, inside the window, by a restart of another
    cause — the gauge has forgotten it.)
    """
    base: list[tuple[str, str, str]] = [("namespace", "=", _escape(namespace))]
    if pod_regex is not None:
        base.append(("pod", "=~", _escape(pod_regex)))
    if container is not None:
        base.append(("container", "=", _escape(container)))
    oom = label_matchers(base, [("reason", "=", "OOMKilled")])
    restarts = f"kube_pod_container_status_restarts_total{label_matchers(base)}"
    reason = f"(kube_pod_container_status_last_terminated_reason{oom} == 1)"
    if window is None:
        query = f"sum{reason}"
    else:
        query = f"sum(increase({restarts}[{window}]) and on(namespace, pod, container) {reason})"
    return query, f"count({restarts})"


def _escape(value: str) -> str:
    return quote(value)[1:-1]
