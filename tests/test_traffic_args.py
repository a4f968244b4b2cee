"""Bad input is refused before anything is sent, naming the argument; never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import chaosmem
from chaosmem.cli import main
from chaosmem.errors import InvalidArgument
from chaosmem.traffic.actions import replay_traffic, stop_traffic_replay
from chaosmem.traffic.probes import replay_summary, status_ratio
from tests.traffic_fixtures import write_gor, write_timed_gor
from tests.traffic_server import RecordingServer


@pytest.fixture
def capture(tmp_path: Path) -> str:
    return str(write_gor(tmp_path / "a.gor"))


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"chaosmem_state_dir": str(tmp_path / "state")}


BAD = [
    ("capture", {"capture": "/nonexistent/*.gor"}),
    ("capture", {"capture": 42}),
    ("capture", {"capture": []}),
    ("target_url", {"target_url": "http://203.0.113.9:8080"}),
    ("target_url", {"target_url": "ftp://127.0.0.1/"}),
    ("target_url", {"target_url": "http://127.0.0.1:99999"}),
    ("speed", {"speed": 0}),
    ("speed", {"speed": "fast"}),
    ("speed", {"speed": True}),
    ("rate", {"rate": -5}),
    ("rate", {"rate": "lots"}),
    ("duration", {"duration": "forever"}),
    ("duration", {"duration": 0}),
    ("duration", {"loop": True}),
    ("loop", {"loop": "yes"}),
    ("concurrency", {"concurrency": 0}),
    ("concurrency", {"concurrency": "many"}),
    ("timeout", {"timeout": "0s"}),
    ("wait", {"wait": "no"}),
    ("headers", {"headers": ["X-A: b"]}),
    ("headers", {"headers": {"Bad Name": "v"}}),
    ("headers.X-A", {"headers": {"X-A": "line\r\nbreak"}}),
    ("remove_headers", {"remove_headers": [1]}),
    ("methods", {"methods": []}),
    ("methods", {"methods": ["GE T"]}),
    ("path_pattern", {"path_pattern": "(unclosed"}),
    ("allow_remote", {"allow_remote": "true"}),
    ("capture_format", {"capture_format": "pcap"}),
]


@pytest.mark.parametrize(
    ("name", "override"), BAD, ids=[f"{n}-{i}" for i, (n, _o) in enumerate(BAD)]
)
def test_bad_argument_is_named(
    capture: str, config: dict[str, Any], name: str, override: dict[str, Any]
) -> None:
    args: dict[str, Any] = {"capture": capture, "target_url": "http://127.0.0.1:9", **override}
    with pytest.raises(InvalidArgument) as info:
        replay_traffic(**args, configuration=config)
    assert info.value.name == name
    assert f"argument '{name}'" in str(info.value)
    assert not (Path(config["chaosmem_state_dir"]) / "replays").exists()  # nothing started


def test_remote_target_is_allowed_only_when_asked(capture: str, config: dict[str, Any]) -> None:
    from chaosmem.traffic.options import parse_options

    options = parse_options(
        capture=capture, target_url="http://203.0.113.9:8080", allow_remote=True
    )
    assert options.host_header == "203.0.113.9:8080"


@pytest.mark.parametrize("status", [0, 700, "5yy", "x", [], True, None])
def test_bad_status_is_named(config: dict[str, Any], status: Any) -> None:
    with pytest.raises(InvalidArgument, match="argument 'status'"):
        status_ratio(status=status, configuration=config)


def test_probes_without_a_replay_say_what_to_do(config: dict[str, Any]) -> None:
    with pytest.raises(chaosmem.errors.ChaosmemError, match="run replay_traffic first"):
        replay_summary(configuration=config)
    with pytest.raises(InvalidArgument, match="argument 'wait'"):
        replay_summary(wait="soon", configuration=config)
    with pytest.raises(InvalidArgument, match="argument 'replay_id'"):
        stop_traffic_replay(replay_id=7, configuration=config)  # type: ignore[arg-type]


def test_activities_are_discovered() -> None:
    names = {
        a["name"]
        for a in chaosmem.discover()["activities"]
        if a["mod"].startswith("chaosmem.traffic")
    }
    assert names == {"replay_traffic", "stop_traffic_replay", "status_ratio", "replay_summary"}


def test_cli_replays_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=20, span_s=0.2)
    with RecordingServer(status_for=lambda i: 503 if i % 4 == 0 else 200) as server:
        argv = ["replay", str(capture), "--target", server.url, "--speed", "2"]
        argv += ["--header", "X-Chaos: 1", "--state-dir", str(tmp_path / "s"), "--json"]
        code = main(argv)
        arrived = server.arrived
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == {"200": 15, "503": 5}
    assert all(a.headers["x-chaos"] == "1" for a in arrived)


def test_cli_prints_a_readable_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_timed_gor(tmp_path / "t.gor", count=5, span_s=0.05)
    with RecordingServer() as server:
        assert (
            main(
                ["replay", str(capture), "--target", server.url, "--state-dir", str(tmp_path / "s")]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "5 sent, 5 answered, 0 without status" in out
    assert "200 5 (100.00%)" in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--target", "http://127.0.0.1:9", "--rate", "0"], "rate"),
        (["--target", "http://example.com"], "target_url"),
        (["--target", "http://127.0.0.1:9", "--header", "no-colon"], "--header"),
        (["--target", "http://127.0.0.1:9", "--concurrency", "lots"], "concurrency"),
        (["--target", "http://127.0.0.1:9", "--duration", "1 fortnight"], "duration"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    capture: str, tmp_path: Path, argv: list[str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chaosmem.cli", "replay", capture,
         "--state-dir", str(tmp_path / "s"), *argv],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert result.returncode == 2
    assert f"argument '{named}'" in result.stderr
    assert "Traceback" not in result.stderr
