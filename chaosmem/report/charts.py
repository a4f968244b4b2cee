"""Chart series -> inline SVG, drawn by pygal.

Every chart is an ``XY`` chart against seconds since the run started, so the memory, traffic,
replicas and Go charts line up when read top to bottom. pygal embeds a ``<script>`` holding its
configuration (for its optional tooltip library, fetched from a CDN): both are removed, so the
report is static, fetches nothing and runs no script. pygal builds the SVG with ElementTree, so
series titles from the experiment (target names) are escaped like any XML text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pygal
from pygal.style import Style

from chaosmem.units import format_duration

__all__ = ["render_charts"]

MIB = float(1 << 20)
_LINE = {"width": 2.5, "linejoin": "round"}
_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#333333",
    foreground_strong="#111111",
    foreground_subtle="#d8dde3",
    opacity=".9",
    opacity_hover="1",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=13,
    title_font_size=15,
    colors=("#1f6feb", "#cf222e", "#8250df", "#bf8700", "#1a7f37", "#0a3069", "#953800", "#6e7781"),
)


def _drop_scripts(root: Any) -> Any:
    for parent in list(root.iter()):
        for child in list(parent):
            if str(child.tag).rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


def _chart(title: str, y_title: str, formatter: Callable[[float], str]) -> pygal.XY:
    chart = pygal.XY(
        style=_STYLE,
        title=title,
        width=960,
        height=360,
        show_dots=False,
        fill=False,
        js=[],
        disable_xml_declaration=True,
        legend_at_bottom=True,
        truncate_legend=-1,
        x_title="time since the run started",
        y_title=y_title,
        x_value_formatter=lambda x: format_duration(max(0.0, float(x))) if x else "0s",
        value_formatter=formatter,
        include_x_axis=True,
        show_minor_x_labels=False,
        x_labels_major_count=8,
        margin=12,
    )
    chart.add_xml_filter(_drop_scripts)
    return chart


def _scaled(points: list[list[float]], scale: float) -> list[tuple[float, float]]:
    return [(p[0], p[1] / scale) for p in points]


def _mib(y: float) -> str:
    return f"{y:,.0f} MiB" if y >= 10 else f"{y:,.1f} MiB"


def memory_chart(series: dict[str, Any]) -> str | None:
    rows = [r for r in series["targets"] if r["usage"] or r["limit"]]
    if not rows and not series["stress"]:
        return None
    chart = _chart("Memory: usage against the limit", "MiB", _mib)
    for row in rows:
        chart.add(f"{row['name']} usage", _scaled(row["usage"], MIB), stroke_style=_LINE)
        if row.get("working_set"):
            chart.add(
                f"{row['name']} working set",
                _scaled(row["working_set"], MIB),
                stroke_style={"width": 1.5},
            )
        if row["limit"]:
            chart.add(
                f"{row['name']} limit",
                _scaled(row["limit"], MIB),
                stroke_style={"width": 2, "dasharray": "8, 5"},
            )
    if series["stress"]:
        chart.add(
            "stressors hold",
            _scaled(series["stress"], MIB),
            stroke_style={"width": 1.5, "dasharray": "2, 3"},
        )
    # NB: Go's own view on the same axis: the gap to the cgroup's usage is the article's point.
    for name, points in series.get("go", {}).items():
        chart.add(
            f"Go {name}", _scaled(points, MIB), stroke_style={"width": 1, "dasharray": "4, 2"}
        )
    kills = [(k["x"], (k["usage"] or 0) / MIB) for r in rows for k in r["oom_kills"]]
    if kills:
        chart.add("OOM kill", kills, stroke=False, show_dots=True, dots_size=7)
    rendered: str = chart.render(is_unicode=True)
    return rendered


def traffic_chart(series: dict[str, Any]) -> str | None:
    if not series["rps"]:
        return None
    chart = _chart(
        "Traffic: requests per second and 503 ratio", "requests/s", lambda y: f"{y:,.1f}"
    )
    chart.add("completed req/s", [(p[0], p[1]) for p in series["rps"]], stroke_style=_LINE)
    if series["ratio_503"]:
        chart.add(
            "503 ratio (%, right axis)",
            [(p[0], p[1] * 100) for p in series["ratio_503"]],
            secondary=True,
            stroke_style=_LINE,
            formatter=lambda y: f"{y:.1f}%",
        )
    for name, points in series.get("prometheus", {}).items():
        if name.endswith("_ratio"):  # the service's own ratio, beside the replay's
            chart.add(
                f"{name} (Prometheus, %, right axis)",
                [(p[0], p[1] * 100) for p in points],
                secondary=True,
                stroke_style={"width": 1.5, "dasharray": "4, 2"},
                formatter=lambda y: f"{y:.1f}%",
            )
    rendered: str = chart.render(is_unicode=True)
    return rendered


def replicas_chart(series: dict[str, Any]) -> str | None:
    if not series["replicas"]:
        return None
    chart = _chart("Autoscaling: replicas", "replicas", lambda y: f"{y:.0f}")
    for name, points in series["replicas"].items():
        chart.add(name, [(p[0], p[1]) for p in points], stroke_style=_LINE)
    rendered: str = chart.render(is_unicode=True)
    return rendered


def go_chart(series: dict[str, Any]) -> str | None:
    if not series["go"]:
        return None
    chart = _chart("Go runtime memory", "MiB", _mib)
    for name, points in series["go"].items():
        chart.add(name, _scaled(points, MIB), stroke_style=_LINE)
    rendered: str = chart.render(is_unicode=True)
    return rendered


def render_charts(series: dict[str, Any]) -> dict[str, str | None]:
    """The SVG of each chart by name; ``None`` where the series has nothing to draw."""
    return {
        "memory": memory_chart(series),
        "traffic": traffic_chart(series),
        "replicas": replicas_chart(series),
        "go": go_chart(series),
    }
