"""The strict gate and JUnit output, on journals made by a real ``chaos run``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from chaosmem.cli import main
from tests.chaos_run import chaos_run, exists_probe, process_action


def hypothesis(probe: dict[str, object]) -> dict[str, object]:
    return {"title": "the world is as expected", "probes": [probe]}


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, Path]]:
    """Three real runs: all met, before-hypothesis not met, after-hypothesis deviated."""
    directory = tmp_path_factory.mktemp("runs")
    marker = directory / "marker"
    return {
        "met": chaos_run(
            directory,
            "met",
            {
                "title": "all met",
                "description": "the probe holds before and after",
                "steady-state-hypothesis": hypothesis(exists_probe("tmp-exists", "/tmp")),
                "method": [process_action("pause", "sleep", "0.1")],
            },
        ),
        "before": chaos_run(
            directory,
            "before",
            {
                "title": "before not met",
                "description": "the hypothesis fails before the method",
                "steady-state-hypothesis": hypothesis(
                    exists_probe("missing", str(directory / "nope"))
                ),
                "method": [process_action("touch", "touch", str(marker))],
            },
        ),
        "after": chaos_run(
            directory,
            "after",
            {
                "title": "after deviated",
                "description": "the method breaks the hypothesis",
                "steady-state-hypothesis": hypothesis(
                    exists_probe("no-marker", str(marker), tolerance=False)
                ),
                "method": [process_action("touch", "touch", str(marker))],
            },
        ),
    }


def test_all_met_passes_the_gate(
    journals: dict[str, tuple[int, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, journal = journals["met"]
    assert code == 0
    assert main(["gate", str(journal)]) == 0
    assert "PASSED" in capsys.readouterr().out


def test_before_hypothesis_not_met_fails_the_gate_though_chaos_exits_0(
    journals: dict[str, tuple[int, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, journal = journals["before"]
    assert code == 0  # Chaos Toolkit's own exit code lets it through
    assert main(["gate", str(journal)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "not met before the method" in out and "'missing'" in out


def test_after_hypothesis_deviated_fails_the_gate(
    journals: dict[str, tuple[int, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, journal = journals["after"]
    assert code == 1
    assert main(["gate", str(journal)]) == 1
    assert "DEVIATED" in capsys.readouterr().out


def test_the_verdict_names_the_checks_that_ran(
    journals: dict[str, tuple[int, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--hypothesis-strategy after-method-only: "before" never ran and the gate says so."""
    met = json.loads(journals["met"][1].read_text())
    code, journal = chaos_run(
        tmp_path,
        "after-only",
        met["experiment"],
        extra=["--hypothesis-strategy", "after-method-only"],
    )
    assert code == 0
    assert main(["gate", str(journal)]) == 0
    out = capsys.readouterr().out
    assert "met after the method; it was not checked before the method" in out
    assert "before and after" not in out
    assert main(["gate", str(journals["met"][1])]) == 0
    assert "met before and after the method" in capsys.readouterr().out


def _forged(tmp_path: Path, name: str, journal: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(journal))
    return path


def test_the_gate_passes_only_a_journal_chaos_toolkit_could_write(
    journals: dict[str, tuple[int, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = json.loads(journals["met"][1].read_text())
    forged = {
        "bare": {"experiment": {}, "status": "completed"},
        "weird-status": {**real, "status": "weird"},
        "run-not-a-list": {**real, "run": 5},
        "extensions-not-a-list": {**real, "extensions": 5},
        "deviated-a-string": {**real, "deviated": "no"},
        "forged-run": {**real, "run": [{"status": "great"}]},
        "no-check-ran": {**real, "steady_states": {"before": None, "after": None, "during": []}},
    }
    for name, journal in forged.items():
        assert main(["gate", str(_forged(tmp_path, name, journal))]) == 1, name
        out = capsys.readouterr()
        assert "FAILED" in out.out and "Traceback" not in out.err, (name, out)
    assert main(["gate", str(_forged(tmp_path, "real", real))]) == 0


def test_junit_for_two_journals(journals: dict[str, tuple[int, Path]], tmp_path: Path) -> None:
    out = tmp_path / "ci" / "gate.xml"
    assert (
        main(["gate", str(journals["met"][1]), str(journals["before"][1]), "--junit", str(out)])
        == 1
    )
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["all met", "before not met"]
    verdicts = {s.get("name"): s.find("testcase[@name='verdict']") for s in suites}
    assert verdicts["all met"] is not None and verdicts["all met"].find("failure") is None
    failure = verdicts["before not met"].find("failure")  # type: ignore[union-attr]
    assert failure is not None and "not met before the method" in (failure.get("message") or "")
    cases = {c.get("name"): c for c in suites[1].findall("testcase")}
    assert cases["before: missing"].find("failure") is not None
    assert cases["after: missing"].find("skipped") is not None
    assert int(root.get("failures") or 0) == 2 and int(root.get("tests") or 0) == sum(
        int(s.get("tests") or 0) for s in suites
    )


def test_arguments_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", str(tmp_path / "missing.json")]) == 2
    assert "argument 'JOURNAL'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"not": "a journal"}')
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "Chaos Toolkit journal" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "j.json", "--format", "pdf"])
    assert "--format" in capsys.readouterr().err


def test_format_and_output_must_agree(
    journals: dict[str, tuple[int, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = str(journals["met"][1])
    assert main(["report", journal, "-o", str(tmp_path / "r.md"), "--format", "html"]) == 2
    assert "argument '--output'" in capsys.readouterr().err
    assert main(["report", journal, "-o", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r.md").read_text().startswith("## ✅ Passed: all met")
