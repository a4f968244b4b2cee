"""Run a game-day plan: one ``chaos run`` per run, in order, restoring everything in between.

Why a child ``chaos run`` per experiment rather than calling chaoslib in this process: each run
then is exactly what a user gets from the command line (controls, signal handling, the
safeguards' SIGUSR1 exit, the journal), and a run that crashes cannot take the game day down
with it. Each run gets a state directory of its own, so the restore between experiments
(``chaosmem rollback`` on that directory) undoes exactly what that run left, and never another
tool's or another game day's changes.

The game day stops early on a *safety failure*: something could not be restored (continuing
would stack the next experiment on a tightened limit or a running stressor), or, unless the plan
says ``on_safeguard: continue``, a safeguard stopped a run. The runs after a stop are reported
as not run, with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosmem.errors import InvalidArgument
from chaosmem.gameday.plan import Plan, Run
from chaosmem.report import build_report, judge, load_journal, render
from chaosmem.report.journal import chaosmem_extension
from chaosmem.rollback import rollback

__all__ = ["GRACE", "Outcome", "Result", "run_plan"]

#: How long a run gets to restore after SIGTERM (timeout, or the game day interrupted).
GRACE = 60.0


@dataclass
class Outcome:
    """What became of one run."""

    run: Run
    status: str  #: passed, deviated, failed, interrupted, not-run
    journal: Path | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    reason: str = ""
    safeguard: dict[str, Any] | None = None
    restored: list[str] = field(default_factory=list)
    restore_errors: list[str] = field(default_factory=list)


@dataclass
class Result:
    plan: Plan
    outcomes: list[Outcome]
    stopped: str | None  #: why the game day ended early, if it did
    files: dict[str, Path]

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(o.status == "passed" for o in self.outcomes)


class _Interrupted(Exception):
    """SIGTERM or SIGINT reached the game day: the current run is told to stop and restore."""


class _Signals:
    """SIGTERM/SIGINT while the game day runs: recorded always, raised only to break the wait
    for a running ``chaos run`` (anywhere else — a restore, a report — the work finishes and the
    loop stops before the next run). Only the first signal interrupts: a second one while the
    run restores must not cut the restore short (the child gets SIGKILL after the grace)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.waiting = False

    def __call__(self, signum: int, frame: object) -> None:
        self.names.append(signal.Signals(signum).name)
        if self.waiting and len(self.names) == 1:
            self.waiting = False
            raise _Interrupted(self.names[0])


def _chaos() -> str:
    return str(Path(sys.executable).with_name("chaos"))


def _figures(journal: Path) -> str:
    report = build_report([journal])
    e = report["experiments"][0]
    targets = e["timeline"]["targets"]
    kills = sum(t["oom_kill_total"] for t in targets) if targets else None
    traffic = e["timeline"]["traffic"]
    ratio = traffic["ratio_503"] if traffic else None
    parts = [f"OOM kills {kills if kills is not None else '—'}"]
    parts.append(f"503 ratio {ratio * 100:.1f}%" if ratio is not None else "503 ratio —")
    return ", ".join(parts)


def _write_new(path: Path, text: str) -> None:
    """Replace ``path`` with a new file, never writing through a symlink someone left there
    (the game day runs as root; a link in the reports folder must not aim its writes)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _lock(folder: Path) -> Path:
    """One game day per reports folder at a time: two would overwrite each other's journals
    and summary. A lock left by a game day that is gone (SIGKILL) is taken over."""
    lock = folder / ".gameday.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            try:
                other = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                other = 0
            if other > 0 and Path(f"/proc/{other}").exists():
                raise InvalidArgument(
                    "PLAN", str(folder), f"no other game day writing there (pid {other} is)"
                ) from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return lock
    raise InvalidArgument("PLAN", str(folder), "a reports folder this game day can lock")


def _stop_child(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM (chaos run turns it into an interruption; the control restores), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _execute(
    run: Run,
    plan: Plan,
    folder: Path,
    state: Path,
    *,
    grace: float,
    say: Callable[[str], None],
    signals: _Signals,
) -> Outcome:
    journal = folder / f"{run.slug}.journal.json"
    journal.unlink(missing_ok=True)  # a figure describes this run: never an earlier file
    var_file = folder / f"{run.slug}.vars.json"
    _write_new(var_file, json.dumps({"configuration": run.vars}, indent=2))
    log = folder / f"{run.slug}.log"
    log.unlink(missing_ok=True)  # chaos appends to it, through a link if one were there
    env = {**os.environ, "CHAOSMEM_STATE_DIR": str(state)}
    env.pop("CHAOSMEM_RUN_ID", None)
    argv = [
        _chaos(),
        "--no-version-check",
        "--log-file",
        str(log),
        "run",
        "--journal-path",
        str(journal),
        "--var-file",
        str(var_file),
        str(run.experiment),
    ]
    started = time.monotonic()
    reason = ""
    with open(os.devnull, "wb") as quiet:
        proc = subprocess.Popen(
            argv, cwd=plan.workdir, env=env, stdout=quiet, stderr=quiet, start_new_session=True
        )
        try:
            signals.waiting = not signals.names
            code = proc.wait(timeout=run.timeout) if signals.waiting else _stop_child(proc, grace)
        except subprocess.TimeoutExpired:
            reason = f"timed out after {run.timeout:g}s and was stopped"
            say(f"      {run.slug}: {reason}")
            code = _stop_child(proc, grace)
        except _Interrupted as exc:
            reason = f"the game day got {exc}; the run was told to stop"
            code = _stop_child(proc, grace)
        finally:
            signals.waiting = False
    outcome = Outcome(run, "failed", exit_code=code, seconds=time.monotonic() - started)
    outcome.reason = reason
    try:
        data = load_journal(journal) if journal.is_file() else None
    except InvalidArgument as exc:  # a journal cut short (the run was killed while writing it)
        data, reason = None, reason or str(exc)
    if data is not None:
        outcome.journal = journal
        verdict = judge(data)
        outcome.status = verdict.status
        outcome.reason = reason or (verdict.reasons[0] if verdict.reasons else "")
        guard = chaosmem_extension(data).get("safeguard")
        outcome.safeguard = guard if isinstance(guard, dict) else None
    else:
        outcome.reason = reason or f"chaos run exited {code} without a journal (see {log})"
    return outcome


def _restore(outcome: Outcome, state: Path) -> None:
    """``chaosmem rollback`` on the run's own state dir: whatever it left open, undone now."""
    for step in rollback(state):
        if step.ok:
            outcome.restored.append(str(step.done))
        else:
            outcome.restore_errors.append(f"{step.entry.describe()}: {step.error}")


def run_plan(
    plan: Plan,
    *,
    reports: Path,
    state_base: Path,
    say: Callable[[str], None] = print,
    grace: float = GRACE,
) -> Result:
    """Run every run of ``plan`` in order and write the summary report; see the module doc."""
    folder = reports / plan.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(
            "--reports", str(reports), f"a folder chaosmem can create ({exc.strerror})"
        ) from None
    if folder.is_symlink() or not folder.is_dir():
        raise InvalidArgument("--reports", str(reports), f"a folder where {folder} is a folder")
    lock = _lock(folder)
    try:
        return _run_locked(plan, folder, state_base, say, grace)
    finally:
        lock.unlink(missing_ok=True)


def _run_locked(
    plan: Plan, folder: Path, state_base: Path, say: Callable[[str], None], grace: float
) -> Result:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    outcomes: list[Outcome] = []
    stopped: str | None = None
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    signals = _Signals()
    for signum in previous:
        signal.signal(signum, signals)
    total = len(plan.runs)
    try:
        for run in plan.runs:
            if signals.names and not stopped:
                stopped = f"the game day was interrupted ({signals.names[0]}) before {run.label}"
            if stopped:
                outcomes.append(Outcome(run, "not-run", reason=stopped))
                continue
            say(f"[{run.index + 1}/{total}] {run.label}: running {run.experiment.name}")
            state = state_base / f"{plan.name}-{stamp}-{os.getpid()}" / run.slug
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
            outcome = _execute(run, plan, folder, state, grace=grace, say=say, signals=signals)
            if signals.names and not stopped:
                stopped = f"the game day was interrupted ({signals.names[0]}) during {run.label}"
            _restore(outcome, state)
            outcomes.append(outcome)
            say(_progress(outcome, total))
            if outcome.restore_errors:
                stopped = f"{run.label} left changes that could not be restored: " + "; ".join(
                    outcome.restore_errors
                )
            elif outcome.safeguard and plan.on_safeguard == "stop" and not stopped:
                stopped = (
                    f"safeguard '{outcome.safeguard.get('name')}' stopped {run.label} "
                    "(on_safeguard: stop)"
                )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stopped:
        say(f"game day stopped: {stopped}")
    files = write_summary(plan, outcomes, stopped, folder)
    return Result(plan, outcomes, stopped, files)


def _progress(outcome: Outcome, total: int) -> str:
    run = outcome.run
    line = (
        f"[{run.index + 1}/{total}] {run.label}: {outcome.status.upper()} in {outcome.seconds:.1f}s"
    )
    if outcome.journal:
        line += f"; {_figures(outcome.journal)}"
    if outcome.safeguard:
        line += f"; stopped by safeguard '{outcome.safeguard.get('name')}'"
    if outcome.restored:
        line += f"; restored {len(outcome.restored)} leftover change(s)"
    if outcome.restore_errors:
        line += f"; COULD NOT RESTORE {len(outcome.restore_errors)}"
    if outcome.status != "passed" and outcome.reason:
        line += f" ({outcome.reason})"
    return line


def write_summary(
    plan: Plan, outcomes: list[Outcome], stopped: str | None, folder: Path
) -> dict[str, Path]:
    """The game day's report (HTML, Markdown) and JUnit: every journal side by side, plus the
    runs that did not run and why."""
    journals = [o.journal for o in outcomes if o.journal is not None]
    missing = [
        {
            "title": o.run.label,
            "source": str(o.run.experiment),
            "status": o.status,
            "reason": o.reason,
        }
        for o in outcomes
        if o.journal is None
    ]
    files: dict[str, Path] = {}
    report = build_report(journals)
    labels = [o.run.label for o in outcomes if o.journal is not None]
    for label, e in zip(labels, report["experiments"], strict=True):
        e["title"] = f"{label}: {e['title']}"
    report["title"] = f"Game day {plan.name}: {len(outcomes)} runs"
    report["gameday"] = True
    report["not_run"] = missing
    report["stopped"] = stopped
    if (missing or stopped) and report["verdict"] == "passed":
        report["verdict"] = "failed"
    for fmt, suffix in (("html", ".html"), ("markdown", ".md"), ("junit", "-junit.xml")):
        path = folder / f"gameday{suffix}"
        _write_new(path, render(report, fmt))
        files[fmt] = path
    return files
