"""A minimal Chaos Toolkit control that records a chaosmem timeline into the journal.

It stores exactly what ``chaosmem.control`` stores (``{"name": "chaosmem", "timeline": …,
"restored": [], "run": …}`` under ``journal["extensions"]``) so the report tests read journals of
the shape real runs produce, made by a real ``chaos run`` and a real :class:`Recorder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaosmem.timeline import Recorder
from tests.cgroup_v1 import CgroupV1

_recorder: Recorder | None = None


def before_experiment_control(
    context: Any, configuration: dict[str, Any] | None = None, interval: float = 0.1, **_: Any
) -> None:
    global _recorder
    config = configuration or {}
    run = Path(config["chaosmem_state_dir"]) / "runs" / "test-run"
    targets = [{"type": "cgroup", "path": config["cgroup"]}] if config.get("cgroup") else []
    _recorder = Recorder(
        directory=run,
        interval=interval,
        targets=targets,
        configuration=config,
        resolve=lambda spec, _config: CgroupV1(Path(spec["path"])),
    )
    _recorder.start()


def before_activity_control(context: dict[str, Any], **_: Any) -> None:
    if _recorder:
        _recorder.mark(
            "activity-start", name=context.get("name"), activity_type=context.get("type")
        )


def after_activity_control(context: dict[str, Any], state: dict[str, Any], **_: Any) -> None:
    if _recorder:
        _recorder.mark("activity-end", name=context.get("name"), status=state.get("status"))


def after_experiment_control(context: Any, state: dict[str, Any], **_: Any) -> None:
    if _recorder:
        timeline = _recorder.stop()
        state.setdefault("extensions", []).append(
            {"name": "chaosmem", "timeline": timeline, "restored": [], "run": "test-run"}
        )
