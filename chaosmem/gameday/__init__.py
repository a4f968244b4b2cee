"""Game days: a plan of experiments run in order, restored in between, reported side by side,
and the same plan on a schedule (Kubernetes CronJob, systemd timer)."""

from chaosmem.gameday.plan import Plan, Run, load_plan, parse_plan
from chaosmem.gameday.runner import Outcome, Result, run_plan
from chaosmem.gameday.schedule import cron_to_oncalendar, render_cronjob, render_systemd

__all__ = [
    "Outcome",
    "Plan",
    "Result",
    "Run",
    "cron_to_oncalendar",
    "load_plan",
    "parse_plan",
    "render_cronjob",
    "render_systemd",
    "run_plan",
]
