"""chaosmem.prometheus.probes against a real Prometheus (Debian package) scraping real exporters.

One Prometheus per module scrapes a status-mix exporter (known rates) and a kube-state-metrics
shaped exporter serving recorded series, switched from "before" to "after" an OOM kill.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosmem.errors import InvalidArgument
from chaosmem.prometheus.client import (
    PrometheusBadQuery,
    PrometheusEmpty,
    PrometheusError,
    PrometheusUnreachable,
    settings_from,
)
from chaosmem.prometheus.probes import oom_killed_count, query_value, status_ratio
from chaosmem.prometheus.promql import parse_selector, quote, status_ratio_query
from tests.conftest import free_port
from tests.prom_support import DATA, FileExporter, MixExporter, prometheus, serve, wait_for

RATES = {
    ("200", "/api"): 60.0,
    ("503", "/api"): 30.0,
    ("500", "/api"): 10.0,
    ("200", "/health"): 100.0,
}


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    mix = MixExporter(RATES)
    ksm = FileExporter(DATA / "ksm" / "before.prom")
    with (
        serve(mix.body) as mix_addr,
        serve(lambda: ksm.body()) as ksm_addr,
        prometheus(
            {"mix": [mix_addr], "ksm": [ksm_addr]}, tmp_path_factory.mktemp("prom")
        ) as handle,
    ):
        config = {"prometheus_base_url": handle.url}
        # a 10 s rate window needs its samples: wait for ten scrapes of both jobs
        wait_for(
            lambda: (
                query_value('min(count_over_time(up{job=~"mix|ksm"}[1m]))', configuration=config)
                >= 10
            ),
            what="ten scrapes",
        )
        yield {"config": config, "ksm": ksm, "url": handle.url}


def test_status_ratio_matches_the_known_mix(prom: dict[str, Any]) -> None:
    config = prom["config"]
    api = 'handler="/api"'
    measured = status_ratio("503", selector=api, window="10s", configuration=config)
    print(f"503 ratio of a 60/30/10 200/503/500 mix: {measured:.4f}")
    assert measured == pytest.approx(0.30, abs=0.03)
    assert status_ratio("5xx", selector=api, window="10s", configuration=config) == pytest.approx(
        0.40, abs=0.03
    )
    both = status_ratio(["503", 500], selector=api, window="10s", configuration=config)
    assert both == pytest.approx(0.40, abs=0.03)
    # every handler: 30 of 200 req/s
    assert status_ratio(503, window="10s", configuration=config) == pytest.approx(0.15, abs=0.03)
    # a status never served is 0, not "no data"
    assert status_ratio("404", selector=api, window="10s", configuration=config) == 0.0


def test_query_value_one_number_or_a_clear_error(prom: dict[str, Any]) -> None:
    config = prom["config"]
    rate = query_value(
        'sum(rate(http_requests_total{handler="/health"}[10s]))', configuration=config
    )
    assert rate == pytest.approx(100.0, rel=0.05)
    assert query_value("vector(3) + 4", configuration=config) == 7
    assert query_value("scalar(vector(2))", configuration=config) == 2
    with pytest.raises(PrometheusBadQuery, match="aggregate"):
        query_value("http_requests_total", configuration=config)
    with pytest.raises(PrometheusBadQuery, match="refused the query") as bad:
        query_value("sum(rate(http_requests_total[1m]", configuration=config)
    assert "parse error" in str(bad.value)
    with pytest.raises(PrometheusEmpty, match="matched no series"):
        query_value("no_such_metric_anywhere", configuration=config)
    with pytest.raises(PrometheusEmpty, match="gave nan"):
        query_value("vector(0) / vector(0)", configuration=config)
    # a time before the server existed: nothing there
    with pytest.raises(PrometheusEmpty):
        query_value("sum(up)", when="2001-01-01T00:00:00Z", configuration=config)


def test_status_ratio_without_series_or_traffic_is_empty(prom: dict[str, Any]) -> None:
    config = prom["config"]
    with pytest.raises(PrometheusEmpty):
        status_ratio(selector='handler="/nothing"', configuration=config)
    with pytest.raises(PrometheusEmpty):
        status_ratio(metric="kube_pod_container_status_restarts_total", configuration=config)


def test_unreachable_is_its_own_error() -> None:
    config = {"prometheus_base_url": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(PrometheusUnreachable, match="unreachable"):
        query_value("up", configuration=config)
    with pytest.raises(PrometheusUnreachable):
        status_ratio(configuration=config)


def test_not_a_prometheus_is_reported_as_such() -> None:
    with (
        serve(lambda: "hello") as addr,
        pytest.raises(PrometheusUnreachable, match="not the Prometheus API"),
    ):
        query_value("up", configuration={"prometheus_base_url": f"http://{addr}"})


def test_oom_killed_count_joins_restarts_with_the_last_reason(prom: dict[str, Any]) -> None:
    config = prom["config"]
    # before: h8v4m and cart were last OOM-killed, and nothing restarted yet
    assert oom_killed_count("shop", configuration=config) == 2
    assert oom_killed_count("shop", pod_regex="cart-.*", configuration=config) == 1
    assert oom_killed_count("shop", window="1m", configuration=config) == 0
    prom["ksm"].path = DATA / "ksm" / "after.prom"
    wait_for(
        lambda: (
            query_value(
                'sum(kube_pod_container_status_last_terminated_reason{pod=~"cart-.*",reason="Completed"})',
                configuration=config,
            )
            == 1
            and query_value(
                'sum(kube_pod_container_status_restarts_total{namespace="shop"})',
                configuration=config,
            )
            == 11
        ),
        what="the after series",
    )
    # 2xkqp restarted twice and was last OOM-killed; cart's restart was not an OOM kill
    assert oom_killed_count("shop", window="1m", configuration=config) == 2
    assert oom_killed_count("shop", pod_regex="orders-.*", window="1m", configuration=config) == 2
    assert oom_killed_count("shop", pod_regex="cart-.*", window="1m", configuration=config) == 0
    assert oom_killed_count("shop", container="envoy", window="1m", configuration=config) == 0
    assert oom_killed_count("billing", window="1m", configuration=config) == 1
    # now: the containers whose last termination is OOMKilled (2xkqp, h8v4m; no longer cart)
    assert oom_killed_count("shop", configuration=config) == 2
    assert oom_killed_count("shop", pod_regex="cart-.*", configuration=config) == 0
    with pytest.raises(PrometheusEmpty, match="kube-state-metrics"):
        oom_killed_count("no-such-namespace", window="5m", configuration=config)
    with pytest.raises(PrometheusEmpty, match="kube-state-metrics"):
        oom_killed_count("shop", container="nope", configuration=config)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"status": "6xx"}, "status"),
        ({"status": []}, "status"),
        ({"status": True}, "status"),
        ({"selector": 'job="a"} or vector(1) #'}, "selector"),
        ({"selector": "job=orders"}, "selector"),
        ({"selector": 'code="200"'}, "selector"),
        ({"metric": "http requests"}, "metric"),
        ({"status_label": "__name__"}, "status_label"),
        ({"window": "0s"}, "window"),
        ({"window": "nan"}, "window"),
        ({"window": "400d"}, "window"),
    ],
)
def test_status_ratio_refuses_bad_arguments(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgument, match=f"'{named}'"):
        status_ratio(**kwargs, configuration={"prometheus_base_url": "http://127.0.0.1:9"})


def test_settings_refuse_what_they_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="prometheus_base_url"):
        settings_from({}, None)
    with pytest.raises(InvalidArgument, match="prometheus_base_url") as exc:
        settings_from({"prometheus_base_url": "http://me:hunter2@127.0.0.1:9090"}, None)
    assert "hunter2" not in str(exc.value)
    with pytest.raises(InvalidArgument, match="both or neither") as exc:
        settings_from(
            {"prometheus_base_url": "http://127.0.0.1:9090"}, {"prometheus_password": "pw1"}
        )
    assert "pw1" not in str(exc.value)
    with pytest.raises(InvalidArgument, match="prometheus_ca_bundle"):
        settings_from(
            {"prometheus_base_url": "https://127.0.0.1:9090"},
            {"prometheus_ca_bundle": str(tmp_path / "missing.pem")},
        )
    with pytest.raises(InvalidArgument, match="when"):
        query_value(
            "up", when=float("inf"), configuration={"prometheus_base_url": "http://127.0.0.1:9"}
        )
    with pytest.raises(InvalidArgument, match="when"):
        query_value(
            "up", when="yesterday", configuration={"prometheus_base_url": "http://127.0.0.1:9"}
        )


def test_basic_auth_against_a_protected_prometheus(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with prometheus({"x": []}, tmp_path, basic_auth=("chaos", "s3cret-pw")) as handle:
        config = {"prometheus_base_url": handle.url}
        good = {"prometheus_username": "chaos", "prometheus_password": "s3cret-pw"}
        assert query_value("vector(1)", configuration=config, secrets=good) == 1
        with pytest.raises(PrometheusError, match="refused the credentials") as exc:
            query_value(
                "vector(1)",
                configuration=config,
                secrets={"prometheus_username": "chaos", "prometheus_password": "wrong-pw"},
            )
        assert "wrong-pw" not in str(exc.value)
        with pytest.raises(PrometheusError, match="refused the credentials"):
            query_value("vector(1)", configuration=config)
    assert "s3cret-pw" not in caplog.text and "wrong-pw" not in caplog.text


class _ApiHandler(BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps(
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "5"]}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_bearer_token_is_sent_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Prometheus has no bearer auth of its own (a proxy in front does it): check the wire."""
    caplog.set_level(logging.DEBUG)
    _ApiHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        value = query_value(
            "up",
            configuration={"prometheus_base_url": f"http://127.0.0.1:{server.server_address[1]}"},
            secrets={"prometheus_token": "tok-123-secret"},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert value == 5
    assert _ApiHandler.seen[0]["authorization"] == "Bearer tok-123-secret"
    assert "tok-123-secret" not in caplog.text


_label = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True)


@given(
    st.lists(
        st.tuples(_label, st.sampled_from(["=", "!=", "=~", "!~"]), st.text(max_size=20)),
        max_size=5,
    )
)
def test_selector_parser_round_trips_quoted_values(items: list[tuple[str, str, str]]) -> None:
    text = ",".join(f"{label}{op}{quote(value)}" for label, op, value in items)
    parsed = parse_selector(text)
    assert [(label, op) for label, op, _ in parsed] == [(label, op) for label, op, _ in items]
    assert [f'"{body}"' for _, _, body in parsed] == [quote(v) for _, _, v in items]


@given(st.text(max_size=60))
def test_selector_never_lets_a_brace_through(text: str) -> None:
    try:
        parsed = parse_selector(text)
    except InvalidArgument:
        return
    query = (
        status_ratio_query(
            status="503", metric="m", status_label="code", selector=text, window="60s"
        )
        if all(label != "code" for label, _, _ in parsed)
        else ""
    )
    # every '}' in the query closes a matcher list we opened: strip the quoted bodies and count
    for _, _, body in parsed:
        query = query.replace(f'"{body}"', '""')
    assert query.count("{") == query.count("}") <= 3
