"""A game-day plan on a schedule: a Kubernetes CronJob, or a systemd timer for a build box.

The CronJob runs the plan in-cluster as the ``chaosmem`` ServiceAccount (namespace
``chaosmem``, see ``deploy/rbac.yaml``), with the plan and its experiment files in a ConfigMap
mounted where the plan expects them, so the cluster runs exactly the files that were rendered.
``concurrencyPolicy: Forbid``: two game days on the same targets would undo each other's limits.

The systemd pair is a oneshot service (the game day, with a start timeout covering every run's
timeout) and a timer whose ``OnCalendar`` is the plan's cron schedule translated.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from chaosmem.errors import InvalidArgument
from chaosmem.gameday.plan import Plan, check_schedule

__all__ = ["cron_to_oncalendar", "render_cronjob", "render_systemd"]

#: Room beyond the sum of the runs' timeouts for set-up, restores and the report.
MARGIN = 600
_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
_NAMES = {d.lower(): i for i, d in enumerate(_DAYS)}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def _env(kind: str) -> Environment:
    return Environment(
        loader=PackageLoader("chaosmem", "templates"),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _config_key(relative: str) -> str:
    """A ConfigMap key for a file path (keys allow ``[-._a-zA-Z0-9]`` only)."""
    return re.sub(r"[^-._a-zA-Z0-9]", "_", relative.replace("/", "__"))


def _total_timeout(plan: Plan) -> int:
    return int(sum(r.timeout for r in plan.runs)) + MARGIN


def render_cronjob(plan: Plan, *, image: str | None = None, schedule: str | None = None) -> str:
    """Multi-document YAML: a ConfigMap with the plan and its experiments, and the CronJob."""
    kube = plan.kubernetes
    image = image or kube.get("image")
    if not image:
        raise InvalidArgument(
            "--image", image, "a container image with chaosmem (or kubernetes.image in the plan)"
        )
    if len(image) > 253 or any(c.isspace() for c in image):
        raise InvalidArgument("--image", image, "an image reference without spaces")
    schedule = check_schedule(schedule) or plan.schedule
    if not schedule:
        raise InvalidArgument("schedule", schedule, "a cron schedule (in the plan or --schedule)")
    files: dict[str, str] = {}
    items: list[dict[str, str]] = []
    # NB: the files keep their layout under the workdir, so "workdir: .." still means /gameday.
    if not plan.source.is_relative_to(plan.workdir):
        raise InvalidArgument(
            "workdir", str(plan.workdir), "a folder holding the plan file too (for --cronjob)"
        )
    plan_rel = str(plan.source.relative_to(plan.workdir))
    for source, rel in [(plan.source, plan_rel)] + [
        (r.experiment, str(r.experiment.relative_to(plan.workdir))) for r in plan.runs
    ]:
        key = _config_key(rel)
        if key not in files:
            files[key] = source.read_text(encoding="utf-8")
            items.append({"key": key, "path": rel})
    name = f"chaosmem-gameday-{plan.name}"  # at most 52: plan names have at most 35
    return (
        _env("yaml")
        .get_template("cronjob.yaml.j2")
        .render(
            name=name,
            namespace=kube.get("namespace", "chaosmem"),
            service_account=kube.get("service_account", "chaosmem"),
            image=json.dumps(image),
            schedule=json.dumps(schedule),
            files={k: json.dumps(v, ensure_ascii=False) for k, v in files.items()},
            items=items,
            plan_path=json.dumps(f"/gameday/{plan_rel}"),
            deadline=_total_timeout(plan),
            plan_name=plan.name,
        )
    )


def _cron_field(text: str, *, low: int, high: int, names: dict[str, int] | None, what: str) -> str:
    """One cron field as a systemd calendar component (``*``, lists, ranges, steps)."""
    if text in ("*", "?"):
        return "*"
    out: list[str] = []
    for part in text.split(","):
        base, _, step = part.partition("/")

        def number(token: str) -> int:
            key = token.lower()
            if names is not None and key in names:
                return names[key]
            if not token.isdigit() or not low <= int(token) <= high:
                raise InvalidArgument("schedule", text, f"{what} values from {low} to {high}")
            return int(token)

        if base == "*":
            start, end = low, None
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = number(a), number(b)
        else:
            start, end = number(base), None
        if step:
            if not step.isdigit() or int(step) == 0:
                raise InvalidArgument("schedule", text, f"a step of 1 or more in {what}")
            out.append(
                f"{start:02d}/{int(step)}" if end is None else f"{start:02d}..{end:02d}/{step}"
            )
        else:
            out.append(f"{start:02d}" if end is None else f"{start:02d}..{end:02d}")
    return ",".join(out)


def cron_to_oncalendar(schedule: str) -> str:
    """``"0 9 * * 1"`` -> ``"Mon *-*-* 09:00:00 UTC"`` (systemd.time(7) calendar events).

    Plan schedules are in UTC, as the CronJob's ``timeZone: Etc/UTC`` reads them."""
    fields = schedule.split()
    if len(fields) != 5:
        raise InvalidArgument("schedule", schedule, "a cron expression of 5 fields")
    minute, hour, dom, month, dow = fields
    months = {m: i + 1 for i, m in enumerate(_MONTHS)}
    m = _cron_field(minute, low=0, high=59, names=None, what="minute")
    h = _cron_field(hour, low=0, high=23, names=None, what="hour")
    d = _cron_field(dom, low=1, high=31, names=None, what="day of month")
    mo = _cron_field(month, low=1, high=12, names=months, what="month")
    days = ""
    if dow not in ("*", "?"):
        spans: list[str] = []
        for part in dow.split(","):
            if "/" in part:
                raise InvalidArgument("schedule", schedule, "no step in the day of week")
            ends = part.split("-", 1)
            idx = []
            for token in ends:
                key = token.lower()[:3]
                if key in _NAMES:
                    idx.append(_NAMES[key])
                elif token.isdigit() and 0 <= int(token) <= 7:
                    idx.append(int(token) % 7)
                else:
                    raise InvalidArgument("schedule", schedule, "days of week 0-7 or Mon..Sun")
            spans.append(_DAYS[idx[0]] if len(idx) == 1 else f"{_DAYS[idx[0]]}..{_DAYS[idx[1]]}")
        days = ",".join(spans) + " "
    return f"{days}*-{mo}-{d} {h}:{m}:00 UTC"


def render_systemd(
    plan: Plan, *, reports: Path, state_dir: Path, schedule: str | None = None
) -> dict[str, str]:
    """``{unit file name: text}`` for the service and the timer."""
    schedule = check_schedule(schedule) or plan.schedule
    if not schedule:
        raise InvalidArgument("schedule", schedule, "a cron schedule (in the plan or --schedule)")
    chaosmem = Path(sys.executable).with_name("chaosmem")
    unit = f"chaosmem-gameday-{plan.name}"
    command = shlex.join(
        [str(chaosmem), "gameday", str(plan.source), "--reports", str(reports.absolute())]
    )
    env = _env("systemd")
    context = {
        "unit": unit,
        "plan_name": plan.name,
        "workdir": str(plan.workdir),
        "command": command,
        "state_dir": str(state_dir.absolute()),
        "timeout": _total_timeout(plan),
        "on_calendar": cron_to_oncalendar(schedule),
        "schedule": schedule,
    }
    for key in ("workdir", "command", "state_dir"):
        value = str(context[key])
        if "\n" in value or '"' in value:
            raise InvalidArgument(key, value, "a path without newlines or double quotes")
        context[key] = value.replace("%", "%%")  # systemd specifiers start with '%'
    return {
        f"{unit}.service": env.get_template("gameday.service.j2").render(**context),
        f"{unit}.timer": env.get_template("gameday.timer.j2").render(**context),
    }
