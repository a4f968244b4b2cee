"""The CI examples run what they say: the gate command of each workflow, run here as the CI would,
passes on real experiments and leaves the artifacts the workflow publishes; a failing experiment
fails it."""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from chaosmem.ledger import Ledger
from tests.conftest import REPO

CI = REPO / "examples" / "ci"
VENV = Path(sys.executable).parent.parent


def github() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CI / "github-actions.yml").read_text())
    return data


def gitlab() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    return data


def github_gate() -> tuple[str, list[str]]:
    steps = github()["jobs"]["gate"]["steps"]
    gate = next(s for s in steps if s.get("name") == "Resilience gate")["run"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    return gate, upload["with"]["path"].split()


def gitlab_gate() -> tuple[str, list[str]]:
    job = gitlab()["resilience-gate"]
    (script,) = job["script"]
    return script, job["artifacts"]["paths"]


def test_the_workflows_trigger_on_pull_requests_and_a_schedule() -> None:
    # NB: PyYAML reads the key `on` as the boolean True (YAML 1.1).
    triggers = github()[True]
    assert "pull_request" in triggers
    assert triggers["schedule"][0]["cron"] == "0 6 * * 1-5"
    rules = [r["if"] for r in gitlab()["resilience-gate"]["rules"]]
    assert '$CI_PIPELINE_SOURCE == "merge_request_event"' in rules
    assert '$CI_PIPELINE_SOURCE == "schedule"' in rules
    assert gitlab()["resilience-gate"]["artifacts"]["reports"]["junit"] == "reports/gate/junit.xml"
    assert gitlab()["resilience-gate"]["artifacts"]["when"] == "always"


def workspace(tmp_path: Path) -> Path:
    """A checkout as CI has it: the files the gate uses, at the same relative paths."""
    root = tmp_path / "checkout"
    for folder in ("experiments", "examples"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "demo").mkdir()
    shutil.copy(REPO / "demo" / "allocator.py", root / "demo")
    return root


def run_gate(command: str, root: Path, state: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    if argv[0] == "sudo":  # GitHub's runner user needs it; the tests already run as root
        assert os.geteuid() == 0
        argv = argv[1:]
    env = {
        "PATH": f"{VENV / 'bin'}:/usr/bin:/bin",
        "VENV": str(VENV),
        "HOME": str(root),
        "PYTHONPATH": str(REPO),
        "CHAOSMEM_STATE_DIR": str(state),
    }
    if command.startswith("examples/"):  # GitLab sets REPORTS in the job's variables
        env.update({k: str(v) for k, v in gitlab()["resilience-gate"]["variables"].items()})
    return subprocess.run(
        argv, cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def _normalised(command: str) -> list[str]:
    """The gate's argv without what only sets the environment (sudo, env REPORTS=...)."""
    argv = shlex.split(command)
    while argv and (argv[0] in {"sudo", "env"} or "=" in argv[0]):
        argv = argv[1:]
    return argv


def test_both_ci_files_run_the_same_gate_with_the_same_reports_folder() -> None:
    (github_command, github_paths), (gitlab_command, gitlab_paths) = github_gate(), gitlab_gate()
    assert _normalised(github_command) == _normalised(gitlab_command)
    assert "REPORTS=reports/gate" in github_command
    assert gitlab()["resilience-gate"]["variables"]["REPORTS"] == "reports/gate"
    assert set(gitlab_paths) <= set(github_paths)


def test_the_gate_command_passes_and_leaves_every_published_artifact(tmp_path: Path) -> None:
    """GitHub's command, run as the runner would (the GitLab job runs the same, see above)."""
    command, artifacts = github_gate()
    root = workspace(tmp_path)
    state = tmp_path / "state"
    done = run_gate(command, root, state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gate passed: 2 of 2 experiments passed" in done.stdout
    for pattern in artifacts:
        assert glob.glob(str(root / pattern)), f"{pattern} is published but was not written"
    suites = ET.parse(root / "reports/gate/junit.xml").getroot().findall("testsuite")
    assert len(suites) == 2
    for suite in suites:
        assert suite.find("testcase[@name='verdict']/failure") is None
    html = (root / "reports/gate/report.html").read_text()
    assert html.count('<section class="experiment"') == 2
    assert not Ledger(state).read().open()


def test_a_failing_experiment_fails_the_gate_and_still_writes_the_artifacts(
    tmp_path: Path,
) -> None:
    command, artifacts = gitlab_gate()
    root = workspace(tmp_path)
    failing = {
        "title": "A probe that fails the hypothesis",
        "description": "the file is not there",
        "steady-state-hypothesis": {
            "title": "a file exists",
            "probes": [
                {
                    "type": "probe",
                    "name": "file-exists",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "os.path",
                        "func": "exists",
                        "arguments": {"path": str(root / "nope")},
                    },
                }
            ],
        },
        "method": [],
    }
    (root / "experiments" / "failing.json").write_text(json.dumps(failing))
    argv = shlex.split(command)
    command = shlex.join([argv[0], "experiments/local-oom.json", "experiments/failing.json"])
    done = run_gate(command, root, tmp_path / "state")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gate FAILED: 1 of 2 experiments passed" in done.stdout
    for pattern in artifacts:
        assert glob.glob(str(root / pattern)), pattern
    failures = ET.parse(root / "reports/gate/junit.xml").getroot().findall(".//failure")
    assert failures
