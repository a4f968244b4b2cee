"""Chart series -> inline SVG, drawn by pygal.

Every chart is an ``XY`` chart against seconds since the run started, so the memory, traffic,
replicas and ratio charts line up when read top to bottom. pygal embeds a ``<script>`` holding its
configuration (for its optional tooltip library, fetched from a CDN): both are removed, so the
report is static, fetches nothing and runs no script. pygal builds the SVG with ElementTree, so
series titles from the experiment (target names) are escaped like any XML text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pygal
from pygal.style import Style

from chaosmem.units import format_duration

__all__ = ["render_charts"]

MIB = float(1 << 20)
_LINE = {"width": 2.5, "linejoin": "round"}
_STYLE_BASE: dict[str, Any] = dict(
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
    colors=("#1f6feb",),
    # NB: light solid grid lines: pygal's default black dashes read as one more limit line.
    guide_stroke_color="#e1e4e8",
    major_guide_stroke_color="#d0d7de",
    guide_stroke_dasharray="none",
    major_guide_stroke_dasharray="none",
)


def _drop_scripts(root: Any) -> Any:
    for parent in list(root.iter()):
        for child in list(parent):
            if str(child.tag).rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


#: One colour per meaning, the same in every chart and report (several targets: shades of it).
COLOURS = {
    "usage": ("#1f6feb", "#0a3069", "#54aeff"),
    "limit": ("#cf222e", "#82071e", "#ff8182"),
    "stress": ("#8250df",),
    "oom": ("#111111",),
    "2xx": ("#1a7f37",),
    "3xx": ("#6e7781",),
    "4xx": ("#bf8700",),
    "5xx": ("#cf222e",),
    "no answer": ("#953800",),
    "other": ("#6e7781",),
    "ratio": ("#cf222e",),
    # NB: not a shade of usage's blue: the two lines run close and must be told apart.
    "working set": ("#1b7c83", "#0b4f55", "#5fc4cc"),
    # Go's own view, drawn thin and dashed; none of them stress's purple or the limit's red
    "go": ("#1a7f37", "#bf8700", "#6e7781", "#e16f24", "#953800"),
    "prometheus": ("#953800", "#8250df", "#1a7f37"),
    "line": ("#1f6feb", "#1a7f37", "#8250df", "#bf8700", "#0a3069", "#953800", "#6e7781"),
}


#: Go's lines by name, so HeapInuse has one colour whatever else the service reported.
GO_LINES = ("HeapInuse", "HeapIdle", "HeapReleased", "Sys", "NextGC")


def colour(meaning: str, index: int = 0) -> str:
    shades = COLOURS.get(meaning, COLOURS["line"])
    return shades[index % len(shades)]


class _Chart:
    """Series added with the colour of their meaning; pygal takes colours by series order, so
    the style is built when the chart is drawn."""

    def __init__(
        self,
        title: str,
        y_title: str,
        formatter: Callable[[float], str],
        *,
        xrange: tuple[float, float] | None,
        yrange: tuple[float, float] | None = None,
        ylabels: list[float] | None = None,
    ) -> None:
        self.options = {
            "title": title,
            "y_title": y_title,
            "value_formatter": formatter,
            "xrange": xrange,
            "range": yrange,
            "y_labels": ylabels,
        }
        self.series: list[tuple[str, list[tuple[float, float]], str, dict[str, Any]]] = []

    def add(
        self, title: str, points: list[tuple[float, float]], colour: str, **options: Any
    ) -> None:
        self.series.append((title, points, colour, options))

    def render(self) -> str:
        style = Style(**{**_STYLE_BASE, "colors": tuple(c for _t, _p, c, _o in self.series)})
        options = {k: v for k, v in self.options.items() if v is not None}
        chart = pygal.XY(
            style=style,
            width=960,
            height=360,
            show_dots=False,
            fill=False,
            js=[],
            disable_xml_declaration=True,
            legend_at_bottom=True,
            truncate_legend=-1,
            x_title="time since the run started",
            x_value_formatter=lambda x: format_duration(max(0.0, float(x))) if x else "0s",
            include_x_axis=True,
            show_minor_x_labels=False,
            x_labels_major_count=8,
            margin=12,
            **options,
        )
        chart.add_xml_filter(_drop_scripts)
        for title, points, _colour, extra in self.series:
            if len(points) == 1:  # NB: a line through one point draws nothing: show the point
                extra = {**extra, "show_dots": True, "dots_size": 4}
            chart.add(title, points, **extra)
        rendered: str = chart.render(is_unicode=True)
        return rendered


def _scaled(points: list[list[float]], scale: float) -> list[tuple[float, float]]:
    return [(p[0], p[1] / scale) for p in points]


def as_steps(points: list[list[float]]) -> list[list[float]]:
    """A step line: the value holds until the sample that saw it change (a limit does not ramp)."""
    stepped: list[list[float]] = []
    for point in points:
        if stepped and point[1] != stepped[-1][1]:
            stepped.append([point[0], stepped[-1][1]])
        stepped.append(point)
    return stepped


def _mib(y: float) -> str:
    if y == 0:
        return "0 MiB"
    return f"{y:,.0f} MiB" if y >= 10 else f"{y:,.1f} MiB"


def time_span(series: dict[str, Any]) -> tuple[float, float] | None:
    """The x range every chart of one experiment shares, so they line up read top to bottom."""
    xs: list[float] = []
    for row in series["targets"]:
        xs += [p[0] for p in row["usage"]] + [p[0] for p in row["limit"]]
        xs += [k["x"] for k in row["oom_kills"] if isinstance(k.get("x"), int | float)]
    for name in ("stress", "rps", "ratio_503"):
        xs += [p[0] for p in series.get(name) or []]
    for group in ("class_rps", "replicas", "go", "prometheus"):
        for points in (series.get(group) or {}).values():
            xs += [p[0] for p in points]
    finite = [x for x in xs if math.isfinite(x)]
    if not finite:
        return None
    low, high = min(0.0, min(finite)), max(finite)
    return (low, high if high > low else low + 1.0)


def _ticks(top: float, highest_limit: float | None) -> list[float] | None:
    """Round y labels up to ``top``, plus the highest limit itself, labelled where it is."""
    if top <= 0 or not math.isfinite(top):
        return None
    raw = top / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [i * step for i in range(int(top / step) + 1)]
    if highest_limit is not None and highest_limit > 0:
        ticks = [t for t in ticks if abs(t - highest_limit) > step / 3] + [highest_limit]
    return sorted(ticks)


def memory_chart(series: dict[str, Any], xrange: tuple[float, float] | None = None) -> str | None:
    """The cgroup's usage, working set and limit, the stressors, and Go's own view (when
    recorded) on one axis: the gap between Go's figures and the cgroup's is the source article's
    point, so Go gets no chart of its own."""
    rows = [r for r in series["targets"] if r["usage"] or r["limit"]]
    go = {name: points for name, points in (series.get("go") or {}).items() if points}
    if not rows and not series["stress"] and not go:
        return None
    kills = [
        (k["x"], k["usage"] / MIB)
        for r in rows
        for k in r["oom_kills"]
        if isinstance(k.get("usage"), int | float)
    ]
    # NB: the axis always reaches the highest limit, so a limit line is never cut off above.
    tops = [p[1] for r in rows for p in r["usage"] + r["limit"]]
    tops += [p[1] for p in series["stress"]] + [k[1] * MIB for k in kills]
    tops += [r["peak_usage"] for r in rows if isinstance(r.get("peak_usage"), int | float)]
    tops += [p[1] for points in go.values() for p in points]
    finite = [t for t in tops if math.isfinite(t)]
    top = max(finite, default=0.0) / MIB
    limits = [p[1] / MIB for r in rows for p in r["limit"] if math.isfinite(p[1])]
    chart = _Chart(
        "Memory: usage against the limit",
        "MiB",
        _mib,
        xrange=xrange,
        yrange=(0.0, top * 1.05 if top > 0 else 1.0),
        ylabels=_ticks(top, max(limits, default=None)),
    )
    for index, row in enumerate(rows):
        chart.add(
            f"{row['name']} usage",
            _scaled(row["usage"], MIB),
            colour("usage", index),
            stroke_style=_LINE,
        )
        if row.get("working_set"):  # usage − inactive_file, what the kubelet evicts on
            chart.add(
                f"{row['name']} working set",
                _scaled(row["working_set"], MIB),
                colour("working set", index),
                stroke_style={"width": 1.5},
            )
        if row["limit"]:
            chart.add(
                f"{row['name']} limit",
                _scaled(as_steps(row["limit"]), MIB),
                colour("limit", index),
                stroke_style={"width": 2, "dasharray": "8, 5"},
            )
    if series["stress"]:
        chart.add(
            "stressors hold",
            _scaled(series["stress"], MIB),
            colour("stress"),
            stroke_style={"width": 1.5, "dasharray": "2, 3"},
        )
    # NB: Go's own view on the same axis: the gap to the cgroup's usage is the article's point.
    for index, (name, points) in enumerate(go.items()):
        chart.add(
            f"Go {name}",
            _scaled(points, MIB),
            colour("go", GO_LINES.index(name) if name in GO_LINES else index),
            stroke_style={"width": 1, "dasharray": "4, 2"},
        )
    if kills:
        chart.add(
            "OOM kill (usage at the kill)",
            kills,
            colour("oom"),
            stroke=False,
            show_dots=True,
            dots_size=7,
        )
    return chart.render()


def traffic_chart(series: dict[str, Any], xrange: tuple[float, float] | None = None) -> str | None:
    classes = series.get("class_rps") or {}
    if not series["rps"] and not classes:
        return None
    chart = _Chart(
        "Traffic: answers per second, by class", "requests/s", lambda y: f"{y:,.1f}", xrange=xrange
    )
    if classes:
        for name, points in classes.items():
            label = "no answer (timeout, refused, reset)/s" if name == "no answer" else f"{name}/s"
            chart.add(label, [(p[0], p[1]) for p in points], colour(name), stroke_style=_LINE)
    else:
        chart.add(
            "completed/s", [(p[0], p[1]) for p in series["rps"]], colour("2xx"), stroke_style=_LINE
        )
    return chart.render()


def ratio_chart(series: dict[str, Any], xrange: tuple[float, float] | None = None) -> str | None:
    # the service's own ratios (Prometheus queries named *_ratio), beside the replay's
    queried = {k: v for k, v in series.get("prometheus", {}).items() if k.endswith("_ratio")}
    if not series["ratio_503"] and not queried:
        return None
    chart = _Chart(
        "503 ratio: share of answered requests that got 503",
        "% of answered requests",
        lambda y: f"{y:.1f}%",
        xrange=xrange,
        yrange=(0.0, 100.0),
    )
    if series["ratio_503"]:
        chart.add(
            "503s, % of answered",
            [(p[0], p[1] * 100) for p in series["ratio_503"]],
            colour("ratio"),
            stroke_style=_LINE,
        )
    for index, (name, points) in enumerate(queried.items()):
        chart.add(
            f"{name} (Prometheus), %",
            [(p[0], p[1] * 100) for p in points],
            colour("prometheus", index),
            stroke_style={"width": 1.5, "dasharray": "4, 2"},
        )
    return chart.render()


def replicas_chart(series: dict[str, Any], xrange: tuple[float, float] | None = None) -> str | None:
    if not series["replicas"]:
        return None
    chart = _Chart("Autoscaling: replicas", "replicas", lambda y: f"{y:.0f}", xrange=xrange)
    for index, (name, points) in enumerate(series["replicas"].items()):
        chart.add(
            name,
            [(p[0], p[1]) for p in as_steps(points)],
            colour("line", index),
            stroke_style=_LINE,
        )
    return chart.render()


def render_charts(series: dict[str, Any]) -> dict[str, str | None]:
    """The SVG of each chart by name (``None`` where the series has nothing to draw), all on one
    time axis."""
    xrange = time_span(series)
    return {
        "memory": memory_chart(series, xrange),
        "traffic": traffic_chart(series, xrange),
        "ratio": ratio_chart(series, xrange),
        "replicas": replicas_chart(series, xrange),
    }
