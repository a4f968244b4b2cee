"""Game-day plans: validation with clear errors, grid expansion, and the schedules they render
(a CronJob checked against the Kubernetes schemas, systemd units checked by systemd itself)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from chaosmem.cli import main
from chaosmem.errors import InvalidArgument
from chaosmem.gameday import cron_to_oncalendar, load_plan, parse_plan, render_cronjob
from chaosmem.gameday.schedule import render_systemd
from tests.conftest import REPO

EXPERIMENT = '{"title": "t", "description": "d", "method": []}'


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "a.json").write_text(EXPERIMENT)
    (tmp_path / "experiments" / "b.json").write_text(EXPERIMENT)
    return tmp_path


def plan_file(workdir: Path, data: Any) -> Path:
    path = workdir / "plan.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def base(**extra: Any) -> dict[str, Any]:
    return {
        "name": "weekly",
        "schedule": "30 9 * * 1-5",
        "experiments": [{"name": "a", "experiment": "experiments/a.json"}],
        **extra,
    }


def test_a_grid_expands_into_one_run_per_combination_with_shared_vars(workdir: Path) -> None:
    data = base(
        vars={"port": 18000, "mode": "x"},
        experiments=[
            {"name": "first", "experiment": "experiments/a.json", "vars": {"mode": "y"}},
            {
                "name": "sweep",
                "experiment": "experiments/b.json",
                "grid": {"gogc": [50, 100, 200], "gomemlimit": ["off", "400MiB"]},
                "timeout": "2m",
            },
        ],
    )
    plan = load_plan(plan_file(workdir, data))
    assert [r.slug for r in plan.runs] == ["first"] + [f"sweep-{i:02d}" for i in range(1, 7)]
    assert plan.runs[0].vars == {"port": 18000, "mode": "y"}
    assert plan.runs[1].vars == {"port": 18000, "mode": "x", "gogc": 50, "gomemlimit": "off"}
    assert plan.runs[6].vars["gogc"] == 200 and plan.runs[6].vars["gomemlimit"] == "400MiB"
    assert plan.runs[2].label == "sweep gogc=50 gomemlimit=400MiB"
    assert plan.runs[3].timeout == 120 and plan.runs[0].timeout == 900
    assert [r.index for r in plan.runs] == list(range(7))


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"name": "../up"}, "name", "lowercase letters"),
        ({"name": "Weekly"}, "name", "lowercase letters"),
        ({"on_safeguard": "maybe"}, "on_safeguard", "'stop' or 'continue'"),
        ({"schedule": "every monday"}, "schedule", "5 fields"),
        ({"vars": {"1x": 2}}, "vars key", "variable name"),
        ({"vars": {"x": [1, 2]}}, "vars.x", "not a list"),
        ({"vars": {"x": float("nan")}}, "vars.x", "finite"),
        ({"vars": {"x": float("inf")}}, "vars.x", "finite"),
        ({"vars": {"x": 10**30}}, "vars.x", "64 bits"),
        ({"vars": {"x": {"deep": {"er": 1}}}}, "vars.x", "not a list or object"),
        ({"experiments": []}, "experiments", "non-empty list"),
        ({"surprise": 1}, "plan", "only the keys"),
        ({"kubernetes": {"namespace": "Not_DNS"}}, "kubernetes.namespace", "DNS label"),
    ],
)
def test_bad_plan_fields_name_the_field_and_the_value(
    workdir: Path, change: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_plan(base(**change), source=workdir / "plan.yaml")
    assert err.value.name == field
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"experiment": "../outside.json"}, "experiments[0].experiment", "no '..'"),
        ({"experiment": "experiments/../../etc/passwd"}, "experiments[0].experiment", "no '..'"),
        ({"experiment": "/etc/passwd"}, "experiments[0].experiment", "not absolute"),
        ({"experiment": "experiments/missing.json"}, "experiments[0].experiment", "existing file"),
        ({"experiment": "experiments"}, "experiments[0].experiment", "not a directory"),
        ({"experiment": "experiments/link.json"}, "experiments[0].experiment", "links outside"),
        ({"timeout": "-5s"}, "experiments[0].timeout", ""),
        ({"timeout": "48h"}, "experiments[0].timeout", "at most 24h"),
        ({"grid": {"g": []}}, "experiments[0].grid.g", "non-empty list"),
        ({"grid": {"g": [1, 1]}}, "experiments[0].grid.g", "without repeated"),
        ({"grid": {"a": list(range(11)), "b": list(range(10))}}, "experiments[0].grid", "at most"),
        ({"name": "a/b"}, "experiments[0].name", "lowercase"),
        ({"what": 1}, "experiments[0]", "only"),
    ],
)
def test_bad_entries_are_refused_before_anything_runs(
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    entry: dict[str, Any],
    field: str,
    words: str,
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "x.json"
    outside.write_text(EXPERIMENT)
    (workdir / "experiments" / "link.json").symlink_to(outside)
    data = base(experiments=[{"name": "a", "experiment": "experiments/a.json", **entry}])
    with pytest.raises(InvalidArgument) as err:
        parse_plan(data, source=workdir / "plan.yaml")
    assert err.value.name == field
    assert words in str(err.value)


def test_two_entries_may_not_share_a_name(workdir: Path) -> None:
    entry = {"name": "a", "experiment": "experiments/a.json"}
    with pytest.raises(InvalidArgument, match="not used by another entry"):
        parse_plan(base(experiments=[entry, entry]), source=workdir / "plan.yaml")


def test_plan_files_duplicate_keys_yaml_errors_and_size_are_refused(workdir: Path) -> None:
    dup = "name: a\nname: b\nexperiments: []\n"
    with pytest.raises(InvalidArgument, match="duplicate key 'name'"):
        load_plan(plan_file(workdir, dup))
    with pytest.raises(InvalidArgument, match="valid YAML"):
        load_plan(plan_file(workdir, "name: [unclosed\n"))
    with pytest.raises(InvalidArgument, match="at most"):
        load_plan(plan_file(workdir, "# " + "x" * 300_000))
    with pytest.raises(InvalidArgument, match="readable"):
        load_plan(workdir / "nope.yaml")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    bomb += "name: bomb\nvars: {v: *b}\nexperiments: []\n"
    with pytest.raises(InvalidArgument, match=r"only the keys \['description'"):
        load_plan(plan_file(workdir, bomb))
    bomb = "name: bomb\nvars: {v: &a [1, 2], w: [*a, *a]}\nexperiments: []\n"
    with pytest.raises(InvalidArgument, match="not a list or object"):
        load_plan(plan_file(workdir, bomb))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=15,
    )
)
def test_any_yaml_value_is_a_plan_or_a_clear_error(workdir: Path, data: Any) -> None:
    try:
        plan = parse_plan(
            {**base(), "vars": data} if isinstance(data, dict) else data,
            source=workdir / "plan.yaml",
        )
    except InvalidArgument as exc:
        assert exc.name and "expected" in str(exc)
    else:
        assert plan.runs and all(
            isinstance(v, str | int | float | bool) for v in plan.runs[0].vars.values()
        )


def test_the_cronjob_is_valid_kubernetes_and_runs_the_plan_as_the_chaosmem_account(
    workdir: Path,
) -> None:
    data = base(
        kubernetes={"image": "registry.example/chaosmem:0.1.0"},
        experiments=[
            {"name": "a", "experiment": "experiments/a.json", "timeout": "10m"},
            {"name": "b", "experiment": "experiments/b.json", "grid": {"x": [1, 2]}},
        ],
    )
    plan = load_plan(plan_file(workdir, data))
    text = render_cronjob(plan)
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == ["ConfigMap", "CronJob"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    config, cron = docs
    assert config["data"]["plan.yaml"] == (workdir / "plan.yaml").read_text()
    assert config["data"]["experiments__a.json"] == EXPERIMENT
    spec = cron["spec"]
    assert spec["schedule"] == "30 9 * * 1-5" and spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert cron["metadata"]["namespace"] == "chaosmem"
    assert pod["serviceAccountName"] == "chaosmem"
    assert {"name": "CHAOSTOOLKIT_IN_POD", "value": "true"} in pod["containers"][0]["env"]
    assert job["backoffLimit"] == 0
    assert job["activeDeadlineSeconds"] == 600 + 900 * 2 + 600
    container = pod["containers"][0]
    assert container["image"] == "registry.example/chaosmem:0.1.0"
    assert container["command"][:3] == ["chaosmem", "gameday", "/gameday/plan.yaml"]
    items = pod["volumes"][0]["configMap"]["items"]
    assert {"key": "experiments__b.json", "path": "experiments/b.json"} in items
    assert len(items) == 3  # the plan and two experiment files, each once


def test_the_cronjob_quotes_hostile_text_as_data(workdir: Path) -> None:
    (workdir / "experiments" / "a.json").write_text(
        '{"title": "x\\n---\\nkind: Secret", "method": [], "note": "\\u0000 : {{ }} \\"q\\" ü ✓"}\n---\nkind: Pod\n'
    )
    plan = load_plan(plan_file(workdir, base()))
    docs = list(yaml.safe_load_all(render_cronjob(plan, image="img:1", schedule="*/5 * * * *")))
    assert [d["kind"] for d in docs] == ["ConfigMap", "CronJob"]
    assert (
        docs[0]["data"]["experiments__a.json"] == (workdir / "experiments" / "a.json").read_text()
    )
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_the_cronjob_needs_an_image_and_a_schedule(workdir: Path) -> None:
    plan = load_plan(plan_file(workdir, {**base(), "schedule": None}))
    with pytest.raises(InvalidArgument) as err:
        render_cronjob(plan)
    assert err.value.name == "--image"
    with pytest.raises(InvalidArgument) as err:
        render_cronjob(plan, image="a:b")
    assert err.value.name == "schedule"
    with pytest.raises(InvalidArgument):
        render_cronjob(plan, image="a b")


@pytest.mark.parametrize(
    ("cron", "calendar"),
    [
        ("0 9 * * 1", "Mon *-*-* 09:00:00 UTC"),
        ("30 9 * * 1-5", "Mon..Fri *-*-* 09:30:00 UTC"),
        ("*/15 * * * *", "*-*-* *:00/15:00 UTC"),
        ("0 3 1,15 * *", "*-*-01,15 03:00:00 UTC"),
        ("0 0 * jan,jul sun", "Sun *-01,07-* 00:00:00 UTC"),
        ("5 4 * * 0,7", "Sun,Sun *-*-* 04:05:00 UTC"),
        ("0 8-18/2 * * *", "*-*-* 08..18/2:00:00 UTC"),
    ],
)
def test_cron_schedules_become_calendar_events_systemd_accepts(cron: str, calendar: str) -> None:
    assert cron_to_oncalendar(cron) == calendar
    if shutil.which("systemd-analyze"):
        done = subprocess.run(
            ["systemd-analyze", "calendar", calendar], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "cron",
    [
        "61 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "* * * * mon/2",
    ],
)
def test_out_of_range_cron_fields_are_refused(cron: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        cron_to_oncalendar(cron)
    assert err.value.name == "schedule"


def test_systemd_units_pass_systemd_analyze_verify(workdir: Path, tmp_path: Path) -> None:
    plan = load_plan(plan_file(workdir, base()))
    units = render_systemd(plan, reports=workdir / "reports", state_dir=workdir / "state%x")
    service = units["chaosmem-gameday-weekly.service"]
    timer = units["chaosmem-gameday-weekly.timer"]
    assert "OnCalendar=Mon..Fri *-*-* 09:30:00 UTC" in timer
    assert "Unit=chaosmem-gameday-weekly.service" in timer
    assert f"gameday {workdir}/plan.yaml --reports {workdir}/reports" in service
    assert "state%%x" in service  # '%' would be a systemd specifier
    assert "TimeoutStartSec=1500" in service
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is part of systemd on Debian; it should be here")
    folder = tmp_path / "units"
    folder.mkdir()
    for name, text in units.items():
        (folder / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(folder / n) for n in units)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_cli_dry_run_cronjob_and_systemd(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = plan_file(
        workdir,
        base(
            experiments=[{"name": "a", "experiment": "experiments/a.json", "grid": {"g": [1, 2]}}]
        ),
    )
    assert main(["gameday", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] a g=1" in out and "[2/2] a g=2" in out
    assert main(["gameday", str(path), "--cronjob", "--image", "i:1"]) == 0
    assert "kind: CronJob" in capsys.readouterr().out
    assert main(["gameday", str(path), "--systemd", "-o", str(workdir / "units")]) == 0
    assert (workdir / "units" / "chaosmem-gameday-weekly.timer").is_file()
    assert main(["gameday", str(path), "--systemd", "--cronjob"]) == 2
    assert "either --cronjob or --systemd" in capsys.readouterr().err
    assert main(["gameday", str(workdir / "missing.yaml")]) == 2


def test_the_bundled_plan_expands_and_schedules(tmp_path: Path) -> None:
    plan = load_plan(REPO / "experiments" / "gameday.yaml")
    assert plan.workdir == REPO
    assert [r.label for r in plan.runs] == [
        "orders gomemlimit=off",
        "orders gomemlimit=100MiB",
        "stress",
    ]
    assert plan.runs[0].experiment == REPO / "experiments" / "local-gameday.json"
    docs = list(yaml.safe_load_all(render_cronjob(plan)))
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    container = docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][2] == "/gameday/experiments/gameday.yaml"
    assert "experiments__local-gameday.json" in docs[0]["data"]


def test_workdir_may_leave_the_plans_folder_but_experiments_may_not_leave_the_workdir(
    workdir: Path,
) -> None:
    sub = workdir / "plans"
    sub.mkdir()
    plan = parse_plan(
        {
            **base(),
            "workdir": "..",
            "experiments": [{"name": "a", "experiment": "experiments/a.json"}],
        },
        source=sub / "plan.yaml",
    )
    assert plan.workdir == workdir
    with pytest.raises(InvalidArgument) as err:
        parse_plan(
            {**base(), "workdir": "..", "experiments": [{"name": "a", "experiment": "../x.json"}]},
            source=sub / "plan.yaml",
        )
    assert err.value.name == "experiments[0].experiment"
    with pytest.raises(InvalidArgument) as err:
        parse_plan({**base(), "workdir": "missing"}, source=sub / "plan.yaml")
    assert err.value.name == "workdir"
    outside = parse_plan(
        {
            **base(),
            "workdir": "../experiments",
            "experiments": [{"name": "a", "experiment": "a.json"}],
        },
        source=sub / "plan.yaml",
    )
    with pytest.raises(InvalidArgument, match="holding the plan file too"):
        render_cronjob(outside, image="i:1")


def test_the_summary_never_writes_through_a_symlink(workdir: Path, tmp_path: Path) -> None:
    from chaosmem.gameday.runner import write_summary

    plan = load_plan(plan_file(workdir, base()))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "reports" / plan.name
    folder.mkdir(parents=True)
    (folder / "gameday.html").symlink_to(victim)
    files = write_summary(plan, [], "nothing ran", folder)
    assert victim.read_text() == "precious"
    assert not files["html"].is_symlink() and "nothing ran" in files["html"].read_text()


def test_a_reports_path_that_is_a_file_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = plan_file(workdir, base())
    (workdir / "afile").write_text("x")
    assert (
        main(
            [
                "gameday",
                str(path),
                "--reports",
                str(workdir / "afile"),
                "--state-dir",
                str(workdir / "s"),
            ]
        )
        == 2
    )
    assert "argument '--reports'" in capsys.readouterr().err


def test_a_bad_schedule_override_is_refused(workdir: Path) -> None:
    plan = load_plan(plan_file(workdir, base()))
    with pytest.raises(InvalidArgument) as err:
        render_cronjob(plan, image="i:1", schedule="every day")
    assert err.value.name == "schedule"
    with pytest.raises(InvalidArgument):
        render_systemd(plan, reports=workdir, state_dir=workdir, schedule="* * *")


def test_plan_names_fit_a_cronjob_name(workdir: Path) -> None:
    plan = load_plan(
        plan_file(workdir, {**base(), "name": "a" * 35, "kubernetes": {"image": "i:1"}})
    )
    cron = list(yaml.safe_load_all(render_cronjob(plan)))[1]
    assert len(cron["metadata"]["name"]) == 52
    kubernetes_validate.validate(cron, "1.30.0", strict=True)
    with pytest.raises(InvalidArgument, match="at most 35"):
        parse_plan({**base(), "name": "a" * 36}, source=workdir / "plan.yaml")


def test_one_game_day_per_reports_folder(workdir: Path, tmp_path: Path) -> None:
    from chaosmem.gameday.runner import run_plan

    plan = load_plan(plan_file(workdir, base()))
    folder = tmp_path / "reports" / plan.name
    folder.mkdir(parents=True)
    (folder / ".gameday.lock").write_text(f"{os.getpid()}\n")  # a live game day holds it
    with pytest.raises(InvalidArgument, match=f"pid {os.getpid()} is"):
        run_plan(plan, reports=tmp_path / "reports", state_base=tmp_path / "state", say=print)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / ".gameday.lock").write_text(f"{dead.pid}\n")  # left by a game day that is gone
    lines: list[str] = []
    result = run_plan(
        plan, reports=tmp_path / "reports", state_base=tmp_path / "state", say=lines.append
    )
    assert [o.status for o in result.outcomes] == ["passed"], lines
    assert not (folder / ".gameday.lock").exists()


def test_the_cronjob_runs_as_the_account_deploy_rbac_defines(workdir: Path) -> None:
    """The ServiceAccount and namespace the CronJob names are the ones deploy/rbac.yaml creates
    and binds, so `kubectl apply -f deploy/rbac.yaml` then the CronJob is all it takes."""
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()) if d]
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in docs
        if d["kind"] == "ServiceAccount"
    }
    bound = {
        (s.get("namespace"), s["name"])
        for d in docs
        if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}
        for s in d.get("subjects", [])
        if s["kind"] == "ServiceAccount"
    }
    plan = load_plan(plan_file(workdir, {**base(), "kubernetes": {"image": "i:1"}}))
    cron = list(yaml.safe_load_all(render_cronjob(plan)))[1]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    used = (cron["metadata"]["namespace"], pod["serviceAccountName"])
    assert used == ("chaosmem", "chaosmem")
    assert used in accounts and used in bound
