"""``chaosmem report`` on long journals: peak RSS and seconds of the whole command, by length.

For each length (20k, 200k and 2M samples by default: 5.5 hours, 2.3 days and 23 days at 1 s)
a journal is written the way a long run leaves it: the recorder's records (one target's usage
climbing in waves against a limit tightened to 512Mi, OOM kills with the kernel's marks, a
stressor, replayed traffic with 503 bursts, replicas scaling out, Go memstats) in a Chaos Toolkit
journal that ``chaos run`` dumps with ``indent=2`` (checked byte for byte against ``json.dump``
on a short one). The journal is streamed to disk, so this script's own memory does not grow.

Then ``chaosmem report JOURNAL -o OUT`` runs as a user runs it, min/median/max over ``--rounds``
rounds of: peak RSS (``ru_maxrss`` of that process, from ``wait4``), wall-clock seconds, HTML
bytes and the points drawn in its charts. With ``--peer REV`` the same command from that git
revision of chaosmem runs interleaved in each round (the "before"), and the ratios are printed.

Goals (printed as met / NOT met; a bench reports, it does not fail): peak RSS bounded whatever
the run's length (the longest journal's median within 1.5x of the shortest's), the report under
1 MB, and no chart drawing more than 5,000 points.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
KILL_EVERY = 2_600  # samples between OOM kills
START = 1_790_000_000.0

#: A chart's lines and dots (pygal: ``<path d="M x y L x y …" class="line reactive …">`` and
#: ``<circle class="dot …">``).
_LINE = re.compile(r'<path d="M([^"]*)" class="line reactive')
_DOT = re.compile(r'<circle [^>]*class="dot ')
_CHART = re.compile(r'<div class="chart">(.*?)</div>', re.S)


def chart_points(html: str) -> list[int]:
    """The points each chart of a report draws: coordinate pairs of its lines, and its dots."""
    counts = []
    for svg in _CHART.findall(html):
        pairs = sum(len(re.findall(r"-?[\d.]+ -?[\d.]+", d)) for d in _LINE.findall(svg))
        counts.append(pairs + len(_DOT.findall(svg)))
    return counts


def records(samples: int) -> Iterator[dict[str, Any]]:
    """The recorder's records of a run of ``samples`` seconds, oldest first."""
    rng = random.Random(7)
    kills = 0
    peak = 0
    for i in range(samples):
        t = START + i
        usage = (300 + 150 * math.sin(i / 400) + rng.random() * 40) * MIB
        if i and i % KILL_EVERY == 0:
            kills += 1
            yield {
                "target": {"type": "service", "name": "orders"},
                "count": kills,
                "at": t - 0.4,
                "usage": int(usage) + 90 * MIB,
                "limit": 512 * MIB,
                "source": "the kernel's OOM report",
                "victim_pid": 4000 + kills,
                "victim_command": "orders",
                "t": t - 0.1,
                "kind": "mark",
                "event": "oom-kill",
            }
        peak = max(peak, int(usage))
        status = {
            "200": 480 + rng.randrange(20),
            "503": rng.randrange(40) if usage > 420 * MIB else 0,
        }
        yield {
            "t": t,
            "kind": "sample",
            "targets": [
                {
                    "name": "orders",
                    "usage": int(usage),
                    "limit": 512 * MIB if i > 60 else 1024 * MIB,
                    "peak": peak,
                    "peak_from": "memory.max_usage_in_bytes",
                    "oom_kills": kills,
                }
            ],
            "stress": {"bytes": min(i, 3000) * 40 * 1024, "stressors": 1},
            "traffic": {
                "replay": "r1",
                "seconds": 1,
                "sent": 500,
                "completed": sum(status.values()),
                "status": status,
                "errors": {},
                "lag_p99_ms": round(2 + rng.random(), 3),
            },
            "replicas": {"desired": 2 + i // 30_000, "ready": 2 + max(0, i - 90) // 30_000},
            "go": {
                "HeapAlloc": int(usage * 0.7),
                "HeapInuse": int(usage * 0.8),
                "Sys": int(usage * 1.1),
            },
        }
    yield {
        "t": START + samples,
        "kind": "stats",
        "samples": samples,
        "cpu_seconds": round(samples * 0.0007, 6),
        "interval": 1.0,
    }


def journal_parts(samples: int) -> tuple[dict[str, Any], str]:
    """The journal around its timeline, and where the timeline goes (a placeholder string)."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(START))
    end = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(START + samples))
    probe = {
        "type": "probe",
        "name": "orders-healthy",
        "tolerance": True,
        "provider": {
            "type": "python",
            "module": "os.path",
            "func": "exists",
            "arguments": {"path": "/"},
        },
    }
    state = {
        "steady_state_met": True,
        "probes": [
            {
                "activity": probe,
                "output": True,
                "status": "succeeded",
                "start": iso,
                "end": iso,
                "duration": 0.01,
                "tolerance_met": True,
            }
        ],
    }
    action = {
        "type": "action",
        "name": "tighten-to-512Mi",
        "provider": {
            "type": "python",
            "module": "chaosmem.limits.actions",
            "func": "tighten_memory_limit",
        },
    }
    hole = "\x00timeline\x00"
    journal = {
        "chaoslib-version": "1.44.0",
        "platform": "Linux",
        "node": "bench",
        "experiment": {
            "title": "Orders at 512Mi under replayed traffic",
            "description": "bench",
            "steady-state-hypothesis": {"title": "orders is healthy", "probes": [probe]},
            "method": [action],
        },
        "start": iso,
        "status": "completed",
        "deviated": False,
        "steady_states": {"before": state, "after": state, "during": []},
        "run": [
            {
                "activity": action,
                "output": None,
                "status": "succeeded",
                "start": iso,
                "end": iso,
                "duration": 0.2,
            }
        ],
        "rollbacks": [],
        "end": end,
        "duration": float(samples),
        "extensions": [
            {
                "name": "chaosmem",
                "run": "bench",
                "timeline": hole,
                "restored": [
                    {
                        "kind": "memory-limit",
                        "target": {"type": "service", "name": "orders"},
                        "done": "restored the memory limit of orders to 1Gi",
                        "error": None,
                    }
                ],
            }
        ],
    }
    return journal, hole


def write_journal(out: TextIO, samples: int) -> None:
    """What ``json.dump(journal, out, indent=2, ensure_ascii=False)`` writes (as ``chaos run``
    does), one record at a time."""
    journal, hole = journal_parts(samples)
    text = json.dumps(journal, indent=2, ensure_ascii=False)
    before, after = text.split(json.dumps(hole))
    indent = "\n" + " " * (len(before) - before.rfind("\n") - 1 - len('"timeline": '))
    out.write(before + "[")
    inner = indent + "  "
    for index, record in enumerate(records(samples)):
        dumped = json.dumps(record, indent=2, ensure_ascii=False).replace("\n", inner)
        out.write(("," if index else "") + inner + dumped)
    out.write(indent + "]" + after)


def check_framing() -> None:
    """The streamed journal is byte for byte the one ``json.dump`` writes."""
    from io import StringIO

    journal, _hole = journal_parts(50)
    journal["extensions"][0]["timeline"] = list(records(50))
    streamed = StringIO()
    write_journal(streamed, 50)
    assert streamed.getvalue() == json.dumps(journal, indent=2, ensure_ascii=False)


def peer_tree(revision: str, into: Path) -> Path:
    """chaosmem as of ``revision`` (``git archive``), importable from ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "chaosmem"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_report(journal: Path, out: Path, tree: Path) -> tuple[float, int, int]:
    """(seconds, peak RSS in bytes, exit code) of ``chaosmem report JOURNAL -o OUT`` run with
    chaosmem from ``tree``."""
    code = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); from chaosmem.cli import main; "
        "sys.exit(main())"
    )
    command = [sys.executable, "-c", code, "report", str(journal), "-o", str(out)]
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    if child.stderr is not None:
        child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss * 1024, child.returncode


def spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    return (
        f"min {min(values) / scale:.2f}{unit} median {statistics.median(values) / scale:.2f}{unit}"
        f" max {max(values) / scale:.2f}{unit}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[20_000, 200_000, 2_000_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer", metavar="REV", help="a git revision to compare with (before)")
    parser.add_argument(
        "--tree", metavar="REV", help="measure this git revision (default: the working tree)"
    )
    args = parser.parse_args()
    check_framing()
    medians: dict[int, float] = {}
    html_bytes: list[int] = []
    most_points = 0
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        trees = {"this tree": ROOT}
        if args.tree:
            (Path(tmp) / "this").mkdir()
            trees["this tree"] = peer_tree(args.tree, Path(tmp) / "this")
        if args.peer:
            (Path(tmp) / "peer").mkdir()
            trees[f"peer {args.peer}"] = peer_tree(args.peer, Path(tmp) / "peer")
        for samples in args.samples:
            path = Path(tmp) / f"journal-{samples}.json"
            began = time.perf_counter()
            with path.open("w", encoding="utf-8") as out:
                write_journal(out, samples)
            print(
                f"report_render: {samples:,} samples: a {path.stat().st_size / 1e6:,.1f} MB "
                f"journal, written in {time.perf_counter() - began:.0f} s",
                flush=True,
            )
            results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in trees}
            for _round in range(args.rounds):
                for name, tree in trees.items():  # NB: interleaved, so both see the same load
                    out = Path(tmp) / f"report-{samples}-{name.split()[0]}.html"
                    results[name].append(run_report(path, out, tree))
            for name, rows in results.items():
                failed = [code for _s, _r, code in rows if code != 0]
                if failed:
                    print(f"  {name}: exit {failed[0]} (refused or failed) in {len(failed)} rounds")
                    continue
                seconds = [s for s, _r, _c in rows]
                rss = [float(r) for _s, r, _c in rows]
                out = Path(tmp) / f"report-{samples}-{name.split()[0]}.html"
                html = out.read_text(encoding="utf-8")
                points = chart_points(html)
                print(
                    f"  {name}: peak RSS {spread(rss, ' MB', 1e6)}; "
                    f"seconds {spread(seconds, ' s')}; "
                    f"{len(html.encode()):,} bytes of HTML; points per chart {points}"
                )
                if name == "this tree":
                    medians[samples] = statistics.median(rss)
                    html_bytes.append(len(html.encode()))
                    most_points = max([most_points, *points])
            if len(trees) == 2 and all(
                all(code == 0 for _s, _r, code in rows) for rows in results.values()
            ):
                mine, peer = results["this tree"], results[f"peer {args.peer}"]
                rss_ratio = statistics.median(r for _s, r, _c in mine) / statistics.median(
                    r for _s, r, _c in peer
                )
                time_ratio = statistics.median(s for s, _r, _c in mine) / statistics.median(
                    s for s, _r, _c in peer
                )
                print(
                    f"  ratio this/peer (medians): peak RSS {rss_ratio:.2f}, "
                    f"seconds {time_ratio:.2f}"
                )
            path.unlink()
    if medians:
        shortest, longest = medians[min(medians)], medians[max(medians)]
        bounded = longest <= 1.5 * shortest
        print(
            f"goal: peak RSS bounded ({max(medians):,} samples within 1.5x of {min(medians):,}: "
            f"{longest / 1e6:.0f} MB against {shortest / 1e6:.0f} MB): "
            f"{'met' if bounded else 'NOT met'}"
        )
        small = max(html_bytes) < 1_000_000
        print(
            f"goal: HTML under 1 MB (at most {max(html_bytes):,} bytes): "
            f"{'met' if small else 'NOT met'}"
        )
        print(
            f"goal: at most 5,000 points per chart (at most {most_points:,}): "
            f"{'met' if most_points <= 5000 else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
