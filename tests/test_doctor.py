"""``chaosmem doctor``: on the real kernel (v1 here, v2 in the VM lane) and on odd v2 trees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaosmem.cli import main
from chaosmem.doctor import diagnose
from chaosmem.targets.cgroup import Cgroup

CHAOSMEM = str(Path(sys.executable).parent / "chaosmem")


@pytest.mark.kernel
def test_doctor_says_where_and_proves_it_may(
    workspace: Cgroup, capsys: pytest.CaptureFixture[str]
) -> None:
    done = subprocess.run([CHAOSMEM, "doctor", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["cgroup_version"] == workspace.version
    assert report["where"] == str(workspace.path)
    if workspace.version == 2:
        assert report["memory_oom_group"] == "0"
        assert "one process at a time" in report["oom_behaviour"]
        assert "holds processes" in report["why"]
    assert not list(workspace.path.glob("chaosmem-doctor-*"))  # the probe is gone
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert f"creates cgroups in: {workspace.path}" in text and "may it:             yes" in text


@pytest.mark.kernel
def test_doctor_checks_a_configured_root(cgroup: Cgroup) -> None:
    report = diagnose(cgroup_root=str(cgroup.path))
    assert report["ok"] is True and report["where"] == str(cgroup.path)
    assert "chaosmem_cgroup_root" in report["why"]
    assert [p.name for p in cgroup.path.iterdir() if p.is_dir()] == []


def test_doctor_refuses_a_root_that_is_no_cgroup(tmp_path: Path) -> None:
    done = subprocess.run(
        [CHAOSMEM, "doctor", "--cgroup-root", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "what to change:" in done.stdout and "chaosmem_cgroup_root" in done.stdout


def test_doctor_in_a_container_namespace_root_says_what_to_do(v2_root: Path) -> None:
    """A container with its own cgroup namespace: its processes sit in the namespace root."""
    (v2_root / "memory.max").write_text("max\n")  # the namespace root is not the host's root
    report = diagnose()
    assert report["ok"] is False and report["cgroup_version"] == 2
    assert "cgroup namespace" in report["problem"] and f"mkdir {v2_root}/init" in report["problem"]
