"""Reports rendered from real runs: escaping, redaction, charts, and a look in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosmem.cli import main
from chaosmem.report import build_report, render
from chaosmem.report.charts import render_charts
from chaosmem.report.series import build_series
from chaosmem.targets.cgroup import Cgroup
from tests.browser import visit
from tests.chaos_run import chaos_run, exists_probe

XSS = "<script>alert('xss')</script>"
INLINE_SECRET = "inline-s3cret-value"
ENV_SECRET = "env-s3cret-from-environment"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def echo_probe(name: str, arguments: list[str]) -> dict[str, object]:
    return {
        "type": "probe",
        "name": name,
        "secrets": ["app"],
        "provider": {"type": "process", "path": "echo", "arguments": arguments},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run under a 64Mi cgroup: memory grows until the kernel OOM-kills the allocator,
    recorded by a real Recorder. The title and a probe output carry markup; a probe echoes
    secrets."""
    directory = tmp_path_factory.mktemp("render")
    state = directory / "state"
    cgroup = Cgroup.of_process("self").child(f"test-render-{directory.name}")
    cgroup.set_memory_limit(64 << 20)
    try:
        code, journal = chaos_run(
            directory,
            "oom",
            {
                "title": f"Orders under 64Mi {XSS}",
                "description": "Grow memory until the kernel steps in.",
                "secrets": {
                    "app": {
                        "token": INLINE_SECRET,
                        "from_env": {"type": "env", "key": "CHAOSMEM_TEST_TOKEN"},
                    }
                },
                "configuration": {
                    "chaosmem_state_dir": str(state),
                    "chaosmem_target": {"type": "cgroup", "path": str(cgroup.path)},
                },
                "controls": [
                    {
                        "name": "chaosmem",
                        "provider": {
                            "type": "python",
                            "module": "chaosmem.control",
                            "arguments": {"interval": "100ms"},
                        },
                    }
                ],
                "steady-state-hypothesis": {
                    "title": "the cgroup exists",
                    "probes": [exists_probe("cgroup-exists", str(cgroup.path))],
                },
                "method": [
                    {
                        "type": "action",
                        "name": "grow-until-oom",
                        "provider": {
                            "type": "python",
                            "module": "chaosmem.stress.actions",
                            "func": "inject_allocation_stress",
                            "arguments": {"size": "200Mi", "growth_rate": "100Mi/s", "wait": True},
                        },
                    },
                    echo_probe("markup-output", [XSS, "token=${token}", "env=${from_env}"]),
                ],
            },
            env={"CHAOSMEM_TEST_TOKEN": ENV_SECRET},
        )
    finally:
        cgroup.remove()
    assert code == 0
    raw = journal.read_text()
    assert INLINE_SECRET in raw and ENV_SECRET in raw  # the journal itself holds them
    return journal


def test_every_format_escapes_markup_and_hides_secrets(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSMEM_TEST_TOKEN", ENV_SECRET)
    report = build_report([run])
    for fmt in ("html", "markdown", "json", "junit"):
        text = render(report, fmt)
        assert INLINE_SECRET not in text and ENV_SECRET not in text, fmt
        assert "redacted" in text, fmt
        if fmt != "json":
            assert XSS not in text, fmt
    html = render(report, "html")
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert('xss')&lt;/script&gt;" in render(report, "markdown")


def test_the_report_tells_the_oom_story(run: Path) -> None:
    e = build_report([run])["experiments"][0]
    assert e["verdict"]["status"] == "passed"
    target = e["timeline"]["targets"][0]
    assert target["limit_min"] == 64 << 20 and target["oom_kill_total"] >= 1
    assert target["peak_usage"] > 32 << 20
    assert e["timeline"]["stress_peak"] >= 32 << 20
    assert [r["name"] for r in e["method"] if r["kind"] == "activity"] == [
        "grow-until-oom",
        "markup-output",
    ]


def test_a_secret_from_an_unset_variable_is_reported_not_silently_kept(
    run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CHAOSMEM_TEST_TOKEN", raising=False)
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0
    assert "$CHAOSMEM_TEST_TOKEN fed a secret" in capsys.readouterr().err
    assert "$CHAOSMEM_TEST_TOKEN fed a secret" in (tmp_path / "r.html").read_text()
    # --redact-env names it where it is known under another name
    monkeypatch.setenv("OTHER_NAME", ENV_SECRET)
    assert (
        main(["report", str(run), "-o", str(tmp_path / "r2.html"), "--redact-env", "OTHER_NAME"])
        == 0
    )
    assert ENV_SECRET not in (tmp_path / "r2.html").read_text()


def test_chart_titles_from_the_experiment_are_escaped_inside_svg() -> None:
    timeline = [
        {
            "t": 10.0 + i,
            "kind": "sample",
            "targets": [{"name": XSS, "usage": i << 20, "limit": 8 << 20, "oom_kills": i // 5}],
        }
        for i in range(10)
    ]
    svg = render_charts(build_series(timeline, 10.0))["memory"]
    assert svg is not None and "&lt;script&gt;alert" in svg and "<script" not in svg


def test_html_report_renders_in_chromium_without_errors(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSMEM_TEST_TOKEN", ENV_SECRET)
    page = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(page)]) == 0
    seen = visit(page, ARTIFACTS / "report.png")
    assert seen.errors == []
    assert [u for u in seen.requests if not u.startswith(("file:", "data:"))] == []
    assert seen.scripts == 0
    assert XSS in seen.title and XSS in seen.text  # shown as text, never run
    assert "PASSED" in seen.text.upper() and "Memory: usage against the limit" in page.read_text()
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_json_is_the_context(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run), str(run), "--format", "json", "-o", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gameday"] is True and len(data["experiments"]) == 2 and data["verdict"] == "passed"


def _json_probe(name: str, value: dict[str, object]) -> dict[str, object]:
    """A real python probe returning ``value``: the stdlib's ``json.loads`` of its text."""
    return {
        "type": "probe",
        "name": name,
        "tolerance": {"type": "regex", "target": "verdict", "pattern": "^oom-killed$"},
        "provider": {
            "type": "python",
            "module": "json",
            "func": "loads",
            "arguments": {"s": json.dumps(value)},
        },
    }


def test_probe_outputs_lead_with_their_summary_and_fold_the_rest(tmp_path: Path) -> None:
    """An output whose keys sort before ``summary``/``verdict`` and run past the report's
    output cap: the cells show the verdict and summary (escaped), the full output is folded."""
    summary = f"the kernel OOM-killed all 1 stressor(s) {XSS}"
    output: dict[str, object] = {
        "matched": 1,
        "run": "r-1",
        "stressors": [{"id": f"s{i}", "outcome": "oom-killed", "size": 1 << 20} for i in range(20)],
        "verdict": "oom-killed",
        "summary": summary,
    }
    code, journal = chaos_run(
        tmp_path,
        "outputs",
        {
            "title": "outputs people can read",
            "description": "a probe output with a verdict and a summary",
            "controls": [
                {"name": "chaosmem", "provider": {"type": "python", "module": "chaosmem.control"}}
            ],
            "configuration": {"chaosmem_state_dir": str(tmp_path / "state")},
            "steady-state-hypothesis": {
                "title": "the stressor was killed",
                "probes": [_json_probe("stress-outcome", output)],
            },
            "method": [_json_probe("outcome-in-method", output)],
        },
    )
    assert code == 0
    report = build_report([journal])
    html = render(report, "html")
    escaped = (
        "the kernel OOM-killed all 1 stressor(s) &lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;"
    )
    headline = f'<span class="headline">oom-killed: {escaped}</span>'
    assert html.count(headline) == 2  # before and after, each one whole
    assert html.count("<summary>full output</summary>") == 3  # before, after, the method row
    folded = html.split("<summary>full output</summary>", 1)[1].split("</details>", 1)[0]
    assert folded.startswith("<code>{&#34;verdict&#34;: &#34;oom-killed&#34;, &#34;summary&#34;")
    assert "<script" not in html.lower()
    # the control recorded a timeline, just no memory target: say that, not "add the control"
    assert "No memory target was watched in this run" in html
    assert "add the <code>chaosmem.control</code> control" not in html

    markdown = render(report, "markdown")
    md_escaped = "the kernel OOM-killed all 1 stressor(s) &lt;script&gt;alert('xss')&lt;/script&gt;"
    row = next(line for line in markdown.splitlines() if line.startswith("| stress-outcome |"))
    assert row.count(f"✅ oom-killed: {md_escaped}") == 2
    assert "<details><summary>Full probe outputs</summary>" in markdown
    assert '- stress-outcome (before): {"verdict": "oom-killed", "summary"' in markdown
    assert "<details><summary>Full outputs</summary>" in markdown
    assert XSS not in markdown


def _go_timeline(targets: bool) -> list[dict[str, object]]:
    """Samples as the recorder writes them: the cgroup's figures (when ``targets``) and Go's."""
    return [
        {
            "t": 10.0 + i,
            "kind": "sample",
            **(
                {"targets": [{"name": "orders", "usage": (40 + i) << 20, "limit": 96 << 20}]}
                if targets
                else {}
            ),
            "go": {
                "HeapInuse": (20 + i) << 20,
                "HeapIdle": 8 << 20,
                "HeapReleased": 2 << 20,
                "Sys": (30 + i) << 20,
                "NextGC": 48 << 20,
            },
        }
        for i in range(10)
    ]


@pytest.mark.parametrize("targets", [True, False], ids=["with-cgroup", "go-only"])
def test_go_memory_is_drawn_once_on_the_memory_chart(targets: bool) -> None:
    charts = render_charts(build_series(_go_timeline(targets), 10.0))
    drawn = {name: svg for name, svg in charts.items() if svg}
    assert set(drawn) == {"memory"}  # no second chart repeating Go's lines
    for line in ("Go HeapInuse", "Go HeapIdle", "Go HeapReleased", "Go Sys", "Go NextGC"):
        assert drawn["memory"].count(f">{line}<") == 1, line
    assert ("orders usage" in drawn["memory"]) is targets


def test_a_series_of_one_sample_is_drawn_as_a_point() -> None:
    """A replay shorter than a second writes one line: a line through one point draws nothing,
    so the chart would look empty beside "10 requests sent"."""
    timeline = [
        {"t": 10.0, "kind": "sample"},
        {
            "t": 11.0,
            "kind": "sample",
            "traffic": {"seconds": 1, "sent": 10, "completed": 10, "status": {"200": 7, "503": 3}},
        },
    ]
    svg = render_charts(build_series(timeline, 10.0))["traffic"]
    assert svg is not None and svg.count('class="dot ') >= 2  # 2xx and 5xx, one point each
