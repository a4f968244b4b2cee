"""Chaos Toolkit actions: replay captured traffic against a target, and stop a replay.

Thin on purpose: arguments are checked by :mod:`chaosmem.traffic.options`, the work is done by
:mod:`chaosmem.traffic.replay` (in this process when ``wait`` is true) or by a worker process
from :mod:`chaosmem.traffic.background` (when it is false).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from chaoslib.types import Configuration, Secrets

from chaosmem.ledger import Ledger, current_run
from chaosmem.state import state_dir
from chaosmem.traffic.background import LEDGER_KIND, start_background
from chaosmem.traffic.oneline import replay_line, started_line, stopped_line
from chaosmem.traffic.options import DEFAULT_CONCURRENCY, parse_options
from chaosmem.traffic.replay import run_replay
from chaosmem.traffic.results import read_summary
from chaosmem.validate import check_bool, check_str

__all__ = ["replay_traffic", "stop_traffic_replay"]

logger = logging.getLogger("chaostoolkit")
T = TypeVar("T")


def _blocking(work: Callable[[], T]) -> T:
    """Run ``work`` here, or in a helper thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()


def replay_traffic(
    capture: Any,
    target_url: str,
    speed: float = 1.0,
    rate: float | None = None,
    duration: Any = None,
    loop: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: Any = "5s",
    wait: bool = True,
    headers: dict[str, str] | None = None,
    remove_headers: list[str] | None = None,
    methods: list[str] | None = None,
    path_pattern: str | None = None,
    allow_remote: bool = False,
    capture_format: str = "auto",
    session_key: str | None = None,
    workers: int | None = None,
    scale: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Replay a capture (goreplay ``.gor``, HAR, chaosmem JSON lines; a path, glob or list)
    against ``target_url``, keeping the recorded gaps divided by ``speed``, or at a fixed
    ``rate`` in requests per second.

    ``wait=true`` returns the final summary; ``wait=false`` starts the replay in a background
    process (recorded in the restore ledger, stopped by ``stop_traffic_replay`` or rollback)
    and returns its id at once, so the experiment can tighten limits while traffic flows.
    Every request goes to ``target_url`` with its Host rewritten; a non-loopback target needs
    ``allow_remote=true``. ``loop`` repeats the capture and then needs ``duration``.

    ``workers`` (default: the cores this process may use) splits the replay across that many
    processes; ``session_key`` (a header such as ``"X-Session-Id"`` or ``"cookie:sid"``) keeps
    each session's requests on one worker, one at a time, in recorded order (HAR's
    ``connection`` is used when there is no key; without either, requests go round-robin).

    ``scale`` (``{"namespace", "pods", "image", "capture_url"|"capture_configmap"|
    "capture_pvc"}``) runs the replay as a Kubernetes Indexed Job of ``pods`` pods instead,
    each replaying its shard (``capture`` then names the file in the ConfigMap or PVC;
    ``concurrency`` is per pod); the pods' logs are followed and merged live into this
    replay's results. With ``wait=false`` a background process runs the Job. The Job is on
    the ledger and deleted at the end, when the replay is stopped, or on rollback.
    """
    if scale is not None:
        return _replay_in_pods(
            scale=scale, wait=wait, configuration=configuration,
            arguments=dict(
                capture=capture, target_url=target_url, speed=speed, rate=rate,
                duration=duration, loop=loop, concurrency=concurrency, timeout=timeout,
                headers=headers, remove_headers=remove_headers, methods=methods,
                path_pattern=path_pattern, allow_remote=allow_remote,
                capture_format=capture_format, session_key=session_key,
            ),
        )  # fmt: skip
    options = parse_options(
        capture=capture, target_url=target_url, speed=speed, rate=rate, duration=duration,
        loop=loop, concurrency=concurrency, timeout=timeout, headers=headers,
        remove_headers=remove_headers, methods=methods, path_pattern=path_pattern,
        allow_remote=allow_remote, capture_format=capture_format, session_key=session_key,
        workers=workers,
    )  # fmt: skip
    background = not check_bool(wait, name="wait")
    state = state_dir(configuration)
    if background:
        started = start_background(options, state=state)
        logger.info(
            "chaosmem: replay %s started in the background (pid %s)",
            started["replay_id"],
            started["pid"],
        )
        return {**started, "summary": started_line(started)}
    summary = _blocking(lambda: run_replay(options, state=state))
    summary = {k: v for k, v in summary.items() if k != "histograms"}  # for files, not journals
    logger.info(
        "chaosmem: replay %s %s: %s sent, %s req/s, status %s, errors %s",
        summary["replay_id"], summary["state"], summary["sent"], summary["req_per_s"],
        summary["status"], {k: v for k, v in summary["errors"].items() if v},
    )  # fmt: skip
    return {**summary, "summary": replay_line(summary)}


def _replay_in_pods(
    *, scale: Any, wait: Any, configuration: Configuration, arguments: dict[str, Any]
) -> dict[str, Any]:
    from chaosmem.traffic.kubejob import parse_scale, run_job

    job = parse_scale(scale)
    background = not check_bool(wait, name="wait")
    options = parse_options(**arguments, workers=1, local_capture=False)
    state = state_dir(configuration)
    if background:
        from chaosmem.targets.kubernetes import client_settings

        started = start_background(
            options, state=state, scale=scale, kubernetes=client_settings(configuration)
        )
        logger.info(
            "chaosmem: replay %s started in the background in %d pods (job %s, worker pid %s)",
            started["replay_id"], job.pods, (started.get("job") or {}).get("name"),
            started["pid"],
        )  # fmt: skip
        return {**started, "summary": started_line(started)}
    summary = run_job(options, job, state=state, configuration=configuration)
    summary = {k: v for k, v in summary.items() if k != "histograms"}
    logger.info(
        "chaosmem: replay %s in %d pods %s: %s sent, status %s, errors %s",
        summary["replay_id"], job.pods, summary["state"], summary["sent"], summary["status"],
        {k: v for k, v in summary["errors"].items() if v},
    )  # fmt: skip
    return {**summary, "summary": replay_line(summary)}


def stop_traffic_replay(
    replay_id: str | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Stop background replays of this state dir (all, or ``replay_id``; inside a run, this
    run's only); safe to call twice.

    Each worker gets SIGTERM and writes its final summary; one that does not stop within 5 s
    is killed. Returns what was done and the final summaries.
    """
    wanted = None if replay_id is None else check_str(replay_id, name="replay_id")
    state = state_dir(configuration)
    ledger = Ledger(state)
    stopped: list[str] = []
    summaries: dict[str, Any] = {}
    # NB: inside a run only this run's replays: one run never stops another's traffic
    for entry in reversed(ledger.read().open(run=current_run(), kind=LEDGER_KIND)):
        rid = str(entry.target.get("replay_id"))
        if wanted is not None and rid != wanted:
            continue
        stopped.append(ledger.undo(entry))
        for job in ledger.read().open(kind="replay-job"):
            if job.target.get("replay_id") == rid:
                # a replay in pods whose worker could not delete its Job (it was killed)
                from chaosmem.traffic import kubejob  # noqa: F401  (registers the undo)

                stopped.append(ledger.undo(job, configuration))
        try:
            summaries[rid] = read_summary(state, rid)
        except Exception as exc:
            summaries[rid] = {"error": str(exc)}
    if not stopped:
        stopped.append(
            "no background replay was running"
            if wanted is None
            else f"replay {wanted} was not running"
        )
    for line in stopped:
        logger.info("chaosmem: %s", line)
    return {
        "stopped": stopped,
        "summaries": summaries,
        "summary": stopped_line(stopped, summaries),
    }
