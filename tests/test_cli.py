"""The chaosmem command: usage errors name the argument; failures exit non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from chaosmem.ledger import Ledger

CHAOSMEM = str(Path(sys.executable).parent / "chaosmem")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAOSMEM, *args], capture_output=True, text=True, timeout=60)


def test_unknown_command_is_a_usage_error() -> None:
    result = run("explode")
    assert result.returncode == 2 and "invalid choice: 'explode'" in result.stderr


def test_state_dir_that_cannot_exist() -> None:
    result = run("rollback", "--state-dir", "/proc/self/nope")
    assert result.returncode == 2
    assert "argument '--state-dir': got '/proc/self/nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_rollback_of_a_state_dir_that_is_not_there_fails(tmp_path: Path) -> None:
    """A typo after a crash must not look like "nothing to roll back"."""
    missing = tmp_path / "no" / "such" / "dir"
    result = run("rollback", "--state-dir", str(missing))
    assert result.returncode == 2, result.stdout
    assert "no such directory" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists()  # and it did not create it
    result = run("rollback", "--state-dir", str(tmp_path))
    assert result.returncode == 2, result.stdout
    assert "holds no ledger.jsonl" in result.stderr
    (tmp_path / "ledger.jsonl").write_text("")
    result = run("rollback", "--state-dir", str(tmp_path))
    assert result.returncode == 0 and "nothing to roll back" in result.stdout


def test_replay_with_no_answer_exits_non_zero(tmp_path: Path) -> None:
    from tests.traffic_fixtures import write_timed_gor
    from tests.traffic_server import refused_url

    capture = write_timed_gor(tmp_path / "t.gor", count=5, span_s=0.05)
    result = run(
        "replay", str(capture), "--target", refused_url(), "--state-dir", str(tmp_path / "s")
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no request got an answer" in result.stderr


def test_an_entry_nobody_can_undo_is_reported_and_kept(tmp_path: Path) -> None:
    (tmp_path / "ledger.jsonl").write_text(
        json.dumps(
            {
                "op": "open",
                "id": "a1",
                "kind": "from-the-future",
                "target": {},
                "undo": {},
                "run": None,
                "at": 1.0,
                "pid": 1,
            }
        )
        + "\n"
    )
    result = run("rollback", "--state-dir", str(tmp_path), "--json")
    assert result.returncode == 1
    steps = json.loads(result.stdout)
    assert steps[0]["kind"] == "from-the-future" and "cannot undo" in steps[0]["error"]
    assert [e.id for e in Ledger(tmp_path).read().open()] == ["a1"]


def test_the_command_table_is_what_the_modules_register() -> None:
    from chaosmem.cli import COMMANDS, build_parser

    def commands(argv: list[str]) -> set[str]:
        parser = build_parser(argv)
        sub = next(a for a in parser._actions if a.dest == "command")
        return set(sub.choices)  # type: ignore[arg-type]

    assert commands([]) == {*COMMANDS, "rollback"}
    for name in COMMANDS:  # each command's own module registers it
        assert name in commands([name, "--help"]), name


def test_a_replay_does_not_load_the_other_commands_modules() -> None:
    code = (
        "import sys\n"
        "from chaosmem.cli import build_parser\n"
        "build_parser(['replay', 'x.gor', '--target', 'http://127.0.0.1:1'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('chaosmem.report', "
        "'chaosmem.prometheus', 'chaosmem.gameday', 'chaosmem.stress.cli'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
