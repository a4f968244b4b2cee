"""Context -> text: HTML, Markdown, JUnit XML (Jinja templates) and JSON.

Escaping is not left to each template: the HTML and XML environments autoescape every
expression, and the Markdown one escapes every expression through ``finalize`` (HTML entities
plus Markdown punctuation), so a title holding ``<script>`` or ``| **x**`` shows as typed. Only
the pygal charts are marked safe, and they are XML that ElementTree built from escaped text.
Characters XML 1.0 cannot hold (ANSI colour codes in a probe's stdout) are dropped everywhere.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from chaosmem.report.charts import render_charts
from chaosmem.report.junit import junit_context
from chaosmem.units import format_duration, format_size

__all__ = ["FORMATS", "render"]

FORMATS = ("html", "markdown", "json")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _plain(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, Markup):
        return _CONTROL.sub("", value)
    return value


def _markdown(value: Any) -> Any:
    if isinstance(value, Markup):
        return value
    if value is None:
        return ""
    text = _CONTROL.sub("", str(value)).replace("\r", "").replace("\n", " ")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return Markup("".join(_HTML_SPECIAL.get(c, c) for c in text))


def _size(value: Any) -> str:
    return "—" if value is None else format_size(float(value))


def _seconds(value: Any) -> str:
    # NB: past a minute, fractions of a second are noise: "+1h25m" reads, "+1h25m0.094s" does not.
    seconds = max(0.0, float(value))
    return format_duration(round(seconds) if seconds >= 60 else seconds)


def _duration(value: Any) -> str:
    return "—" if value is None else _seconds(value)


def _offset(value: Any) -> str:
    return "" if value is None else "+" + _seconds(value)


def _percent(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{float(value) * 100:.{digits}f}%"


def _number(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{float(value):,.{digits}f}"


@cache
def environment(kind: str) -> Environment:
    """``html``/``xml``: autoescaped; ``markdown``: escaped for GitHub-flavoured Markdown."""
    env = Environment(
        loader=PackageLoader("chaosmem", "templates"),
        autoescape=kind != "markdown",
        finalize=_markdown if kind == "markdown" else _plain,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        size=_size, duration=_duration, offset=_offset, percent=_percent, number=_number
    )
    return env


def render(report: dict[str, Any], fmt: str) -> str:
    """The report in ``fmt`` (``html``, ``markdown``, ``json`` or ``junit``)."""
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"
    if fmt == "html":
        charts = [
            {
                name: Markup(svg) if svg else None
                for name, svg in render_charts(e["timeline"]).items()
            }
            for e in report["experiments"]
        ]
        return (
            environment("html").get_template("report.html.j2").render(report=report, charts=charts)
        )
    if fmt == "markdown":
        return environment("markdown").get_template("report.md.j2").render(report=report)
    if fmt == "junit":
        return environment("xml").get_template("junit.xml.j2").render(junit=junit_context(report))
    raise ValueError(f"unknown report format {fmt!r}")
