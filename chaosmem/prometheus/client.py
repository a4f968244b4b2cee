"""One instant query against the Prometheus the experiment names, with errors that say which
of three things went wrong: the server could not be reached, it refused the query, or the query
matched nothing.

Settings: ``configuration["prometheus_base_url"]`` (the key chaostoolkit-prometheus uses) and, from
secrets, ``prometheus_token`` (bearer), ``prometheus_username``/``prometheus_password`` (basic),
``prometheus_ca_bundle`` (a CA file for https). Credentials go into request headers only: they
are never part of a message, a log line or a journal value (a URL carrying ``user:pass@`` is
refused for that reason).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.timestamps import parse_iso
from chaosmem.validate import check_url

__all__ = [
    "PrometheusBadQuery",
    "PrometheusEmpty",
    "PrometheusError",
    "PrometheusSettings",
    "PrometheusUnreachable",
    "instant_query",
    "one_value",
    "settings_from",
]

DEFAULT_TIMEOUT = 10.0
MAX_SERIES = 10_000


class PrometheusError(ChaosmemError):
    """A Prometheus query failed; the subclass says how."""


class PrometheusUnreachable(PrometheusError):
    """No answer from the server (refused, timed out, TLS failure, 5xx after retries)."""


class PrometheusBadQuery(PrometheusError):
    """The server answered and refused the query (syntax, types, 4xx)."""


class PrometheusEmpty(PrometheusError):
    """The query ran and matched no series (or gave no number)."""


@dataclass(frozen=True)
class PrometheusSettings:
    base_url: str
    timeout: float = DEFAULT_TIMEOUT
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    auth: tuple[str, str] | None = field(default=None, repr=False)
    verify: bool | str = True

    def connect(self) -> PrometheusConnect:
        # NB: one retry only (on connection errors and 502/503/504), so an unreachable server
        # fails a probe in about a second instead of the library's default 7 s of backoff.
        retry = Retry(total=1, backoff_factor=0.2, status_forcelist=[502, 503, 504])
        conn = PrometheusConnect(
            url=self.base_url,
            headers=dict(self.headers) or None,
            retry=retry,
            auth=self.auth,
            timeout=self.timeout,
        )
        conn._session.verify = self.verify
        # NB: no proxy from the environment for a loopback Prometheus (tests, the demo).
        conn._session.trust_env = False
        return conn


def _secret(secrets: Mapping[str, Any] | None, key: str) -> str | None:
    if not secrets or secrets.get(key) in (None, ""):
        return None
    value = secrets[key]
    if not isinstance(value, str):
        raise InvalidArgument(f"secrets.{key}", "<hidden>", "a string")
    return value


def settings_from(
    configuration: Mapping[str, Any] | None,
    secrets: Mapping[str, Any] | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> PrometheusSettings:
    """Settings from the experiment; a missing or malformed base URL names the key to set."""
    raw = (configuration or {}).get("prometheus_base_url")
    if raw is None:
        raise InvalidArgument(
            "configuration.prometheus_base_url", None, "the URL of the Prometheus server"
        )
    if isinstance(raw, str) and "@" in (urlsplit(raw).netloc or ""):
        raise InvalidArgument(
            "configuration.prometheus_base_url",
            "<a URL with credentials, hidden>",
            "a URL without user:password@ (put credentials in secrets: prometheus_username, "
            "prometheus_password or prometheus_token)",
        )
    url = check_url(raw, name="configuration.prometheus_base_url", allow_remote=True).rstrip("/")
    headers: dict[str, str] = {}
    token = _secret(secrets, "prometheus_token")
    if token is not None:
        if any(c in token for c in "\r\n"):
            raise InvalidArgument("secrets.prometheus_token", "<hidden>", "a single-line token")
        headers["Authorization"] = f"Bearer {token}"
    user = _secret(secrets, "prometheus_username")
    password = _secret(secrets, "prometheus_password")
    if (user is None) != (password is None):
        raise InvalidArgument(
            "secrets.prometheus_username/prometheus_password",
            "<hidden>",
            "both or neither (HTTP basic auth)",
        )
    if token is not None and user is not None:
        raise InvalidArgument(
            "secrets", "<hidden>", "either prometheus_token or prometheus_username, not both"
        )
    ca = _secret(secrets, "prometheus_ca_bundle")
    if ca is not None and not Path(ca).is_file():
        raise InvalidArgument("secrets.prometheus_ca_bundle", ca, "the path of a CA file")
    return PrometheusSettings(
        base_url=url,
        timeout=timeout,
        headers=headers,
        auth=(user, password) if user is not None and password is not None else None,
        verify=ca if ca is not None else True,
    )


def _when(value: object) -> float | None:
    """``None`` (now), a unix time, or an ISO-8601 time with a zone."""
    if value is None:
        return None
    expected = "None, a unix time in seconds, or an ISO-8601 time such as 2024-05-01T12:00:00Z"
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        parsed = parse_iso(value)
        if parsed is None:
            raise InvalidArgument("when", value, expected)
        if parsed.tzinfo is None:
            raise InvalidArgument("when", value, expected + " (with a zone)")
        seconds = parsed.timestamp()
    else:
        raise InvalidArgument("when", value, expected)
    if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
        raise InvalidArgument("when", value, expected)
    return seconds


_STATUS = re.compile(r"HTTP Status Code (\d{3}) \((b'.*'|b\".*\")\)\Z", re.S)


def _refusal(exc: PrometheusApiClientException) -> tuple[int | None, str]:
    """(HTTP status, the server's error text) from the library's exception message."""
    match = _STATUS.match(str(exc)[:20_000])
    if not match:
        return None, str(exc)[:500]
    status = int(match.group(1))
    try:
        body = ast.literal_eval(match.group(2))
        payload = json.loads(body)
        text = str(payload.get("error") or payload)
    except (ValueError, SyntaxError, AttributeError):
        text = match.group(2)
    return status, text[:500]


def instant_query(settings: PrometheusSettings, query: str, when: object = None) -> list[Any]:
    """The raw ``result`` of an instant query (a vector's series, or a scalar's pair)."""
    if not isinstance(query, str) or not query.strip() or len(query) > 10_000:
        raise InvalidArgument("query", query, "a PromQL expression of at most 10000 characters")
    params: dict[str, Any] = {}
    at = _when(when)
    if at is not None:
        params["time"] = f"{at:.3f}"
    conn = settings.connect()
    try:
        result = conn.custom_query(query, params=params)
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise PrometheusUnreachable(
            f"Prometheus at {settings.base_url} is unreachable ({type(exc).__name__}); check "
            "configuration.prometheus_base_url and that the server is running"
        ) from None
    except (ValueError, KeyError, TypeError):
        # NB: before RequestException: requests' JSONDecodeError is both.
        raise PrometheusUnreachable(
            f"{settings.base_url} answered something that is not the Prometheus API; "
            "is configuration.prometheus_base_url a Prometheus server?"
        ) from None
    except requests.exceptions.RetryError:
        raise PrometheusUnreachable(
            f"Prometheus at {settings.base_url} kept answering 5xx; is it overloaded or starting?"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise PrometheusUnreachable(
            f"Prometheus at {settings.base_url}: {type(exc).__name__}"
        ) from None
    except PrometheusApiClientException as exc:
        status, text = _refusal(exc)
        if status in (401, 403):
            raise PrometheusError(
                f"Prometheus at {settings.base_url} refused the credentials (HTTP {status}); "
                "check secrets prometheus_token or prometheus_username/prometheus_password"
            ) from None
        if status is not None and status >= 500:
            raise PrometheusUnreachable(
                f"Prometheus at {settings.base_url} failed (HTTP {status}): {text}"
            ) from None
        raise PrometheusBadQuery(f"Prometheus refused the query {query!r}: {text}") from None
    finally:
        conn.close()
    if not isinstance(result, list) or len(result) > MAX_SERIES:
        raise PrometheusBadQuery(f"the query {query!r} gave an unexpected result shape")
    return result


def _number(text: object, query: str) -> float:
    try:
        value = float(str(text))
    except ValueError:
        raise PrometheusBadQuery(f"the query {query!r} gave a non-number {text!r}") from None
    return value


def one_value(result: list[Any], query: str, *, allow_nan: bool = False) -> float:
    """The single number of an instant-query result.

    A scalar result is ``[t, "v"]``; a vector must hold exactly one series (a query over many
    series should aggregate them: ``sum(...)``). An empty vector is :class:`PrometheusEmpty`;
    NaN and infinities are refused (a ratio over no traffic is NaN) unless ``allow_nan``.
    """
    if len(result) == 2 and not isinstance(result[0], dict):
        value = _number(result[1], query)
    elif not result:
        raise PrometheusEmpty(
            f"the query {query!r} matched no series; check the metric name, the labels, and that "
            "Prometheus scrapes the target (its /targets page)"
        )
    elif len(result) > 1:
        raise PrometheusBadQuery(
            f"the query {query!r} gave {len(result)} series; aggregate them to one "
            "(e.g. sum(...) or max(...))"
        )
    else:
        series = result[0]
        pair = series.get("value") if isinstance(series, dict) else None
        if not isinstance(pair, list) or len(pair) != 2:
            raise PrometheusBadQuery(f"the query {query!r} gave an unexpected result shape")
        value = _number(pair[1], query)
    if not math.isfinite(value) and not allow_nan:
        raise PrometheusEmpty(
            f"the query {query!r} gave {value} (no data to divide: e.g. no requests in the window)"
        )
    return value
