"""Run one experiment over a grid of ``--var`` settings and summarise the runs side by side.

``chaosmem sweep experiments/gogc-sweep.json --grid gogc=50,100,400 --grid gomemlimit=off,120MiB``
runs ``chaos run --var gogc=… --var gomemlimit=…`` once per combination, in order, each a fresh
run (the chaosmem control starts and stops the service and restores everything per run), and
writes ``summary.json``, ``summary.md`` and ``summary.html`` with, per setting: the run's status,
peak cgroup usage and working set, OOM kills, the 503 ratio of the replayed traffic and the
requests that got no answer, and Go's peak HeapInuse — the source article's tuning advice, measured on the same traffic.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.report.series import build_series
from chaosmem.units import format_size
from chaosmem.validate import check_name

__all__ = ["SweepRow", "parse_grid", "run_sweep", "summarise_journal"]

MAX_RUNS = 100
_VALUE = re.compile(r"[A-Za-z0-9_.:%+-]{1,64}")


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["gogc=50,100", "gomemlimit=off,120MiB"]`` -> [("gogc", ["50", "100"]), …]."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        name, sep, values = item.partition("=")
        if not sep:
            raise InvalidArgument("--grid", item, "NAME=V1,V2,… such as gogc=50,100,200")
        check_name(name, name="--grid name")
        options = [v.strip() for v in values.split(",")]
        if not options or not all(_VALUE.fullmatch(v) for v in options):
            raise InvalidArgument(
                f"--grid {name}", values, "comma-separated values of letters, digits, ._:%+-"
            )
        if name in {n for n, _ in grid}:
            raise InvalidArgument("--grid", item, f"{name!r} once")
        grid.append((name, options))
    if not grid:
        raise InvalidArgument("--grid", None, "at least one NAME=V1,V2,…")
    runs = 1
    for _, options in grid:
        runs *= len(options)
    if runs > MAX_RUNS:
        raise InvalidArgument("--grid", items, f"at most {MAX_RUNS} combinations (got {runs})")
    return grid


@dataclass
class SweepRow:
    settings: dict[str, str]
    exit_code: int
    journal: str | None
    status: str | None = None
    deviated: bool | None = None
    peak_usage: float | None = None
    peak_working_set: float | None = None
    limit: float | None = None
    oom_kills: int | None = None
    ratio_503: float | None = None
    requests: int | None = None
    no_answer: int | None = None
    peak_heap_inuse: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarise_journal(path: Path) -> dict[str, Any]:
    """The figures of one run, from its journal's chaosmem timeline."""
    journal = json.loads(path.read_text(encoding="utf-8"))
    ext = next((e for e in journal.get("extensions", []) if e.get("name") == "chaosmem"), None)
    out: dict[str, Any] = {"status": journal.get("status"), "deviated": journal.get("deviated")}
    if not ext or not ext.get("timeline"):
        return out
    timeline = ext["timeline"]
    series = build_series(timeline, float(timeline[0]["t"]))
    if series["targets"]:
        row = series["targets"][0]
        out["peak_usage"] = row["peak_usage"]
        out["limit"] = row["limit_max"]
        out["oom_kills"] = row["oom_kill_total"]
        working = row.get("working_set") or []
        out["peak_working_set"] = max((p[1] for p in working), default=None)
    # NB: the replay's own summary (a replay_traffic or replay_summary output) is the account of
    # record; the timeline's per-second sums are the fallback.
    traffic = _replay_output(journal) or series.get("traffic")
    if traffic:
        status = {str(k): int(v) for k, v in traffic["status"].items()}
        answered = sum(status.values())
        out["ratio_503"] = status.get("503", 0) / answered if answered else None
        out["requests"] = int(traffic["sent"])
        # refused, reset or timed out: what an OOM-killed service leaves its clients with
        out["no_answer"] = int(traffic["sent"]) - answered
    heap = series["go"].get("HeapInuse") or []
    out["peak_heap_inuse"] = max((p[1] for p in heap), default=None)
    return out


def _replay_output(journal: dict[str, Any]) -> dict[str, Any] | None:
    """The last activity output shaped like a replay summary (``sent``, ``status``)."""
    found = None
    for item in journal.get("run") or []:
        output = item.get("output") if isinstance(item, dict) else None
        if (
            isinstance(output, dict)
            and isinstance(output.get("sent"), int)
            and isinstance(output.get("status"), dict)
        ):
            found = output
    return found


def _slug(settings: dict[str, str]) -> str:
    text = "_".join(f"{k}-{v}" for k, v in settings.items())
    return re.sub(r"[^A-Za-z0-9_.-]", "", text)[:200]


def _chaos() -> str:
    beside = Path(sys.executable).with_name("chaos")
    return str(beside) if beside.exists() else "chaos"


def run_sweep(
    experiment: Path,
    grid: list[tuple[str, list[str]]],
    out: Path,
    *,
    chaos: str | None = None,
    progress: Any = print,
) -> list[SweepRow]:
    """Run every combination in order; a run that deviates or OOMs is a result, not an error."""
    if not experiment.is_file():
        raise InvalidArgument("experiment", str(experiment), "an experiment file")
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n, _ in grid]
    combos = list(itertools.product(*(options for _, options in grid)))
    rows: list[SweepRow] = []
    for index, values in enumerate(combos, 1):
        settings = dict(zip(names, values, strict=True))
        journal = out / f"{_slug(settings)}.journal.json"
        journal.unlink(missing_ok=True)
        argv = [chaos or _chaos(), "--no-version-check", "--no-log-file", "run"]
        for name, value in settings.items():
            argv += ["--var", f"{name}={value}"]
        argv += ["--journal-path", str(journal), str(experiment)]
        with (out / f"{_slug(settings)}.log").open("wb") as log:
            code = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, check=False
            ).returncode
        row = SweepRow(settings=settings, exit_code=code, journal=None)
        if journal.exists():
            row.journal = str(journal)
            for key, value in summarise_journal(journal).items():
                setattr(row, key, value)
        rows.append(row)
        label = " ".join(f"{k}={v}" for k, v in settings.items())
        progress(
            f"[{index}/{len(combos)}] {label}: {row.status or 'no journal'}, "
            f"peak {format_size(row.peak_usage)}, OOM kills {row.oom_kills}, "
            f"503 ratio {_pct(row.ratio_503)}"
        )
        if code == 130 or code < 0:
            raise ChaosmemError(f"the sweep was interrupted during {label}")
    write_summary(experiment, rows, out)
    return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _size(value: float | None) -> str:
    return "n/a" if value is None else format_size(value)


COLUMNS = (
    "status",
    "peak usage",
    "peak working set",
    "limit",
    "OOM kills",
    "503 ratio",
    "requests",
    "no answer",
    "peak Go HeapInuse",
)


def _cells(r: SweepRow) -> list[str]:
    return [
        str(r.status or f"no journal (exit {r.exit_code})"),
        _size(r.peak_usage),
        _size(r.peak_working_set),
        _size(r.limit),
        "n/a" if r.oom_kills is None else str(r.oom_kills),
        _pct(r.ratio_503),
        "n/a" if r.requests is None else str(r.requests),
        "n/a" if r.no_answer is None else str(r.no_answer),
        _size(r.peak_heap_inuse),
    ]


def write_summary(experiment: Path, rows: list[SweepRow], out: Path) -> None:
    names = list(rows[0].settings) if rows else []
    (out / "summary.json").write_text(
        json.dumps({"experiment": str(experiment), "runs": [r.as_dict() for r in rows]}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    header = [*names, *COLUMNS]
    md = [f"# Sweep of {experiment.name}", "", "| " + " | ".join(header) + " |"]
    md.append("|" + "---|" * len(header))
    for r in rows:
        cells = [*(r.settings[n] for n in names), *_cells(r)]
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    (out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    esc = html.escape
    body = "".join(
        "<tr>"
        + "".join(f"<td>{esc(c)}</td>" for c in [*(r.settings[n] for n in names), *_cells(r)])
        + "</tr>"
        for r in rows
    )
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    page = (
        "<!doctype html><meta charset=utf-8>"
        f"<title>Sweep of {esc(experiment.name)}</title>"
        "<style>body{font:14px sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse}</style>"
        f"<h1>Sweep of {esc(experiment.name)}</h1><table><tr>{head}</tr>{body}</table>"
    )
    (out / "summary.html").write_text(page, encoding="utf-8")
