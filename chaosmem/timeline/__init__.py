"""The run's timeline: what memory, stress and traffic looked like second by second.

The control starts a :class:`Recorder` before the experiment and stops it after; the recorder
samples every target, the stressors and the traffic replay on a background thread and takes
``mark`` calls for the moments that matter (an activity starts or ends, the kernel OOM-kills a
process). Reports draw their charts from this list.
"""

from __future__ import annotations

from chaosmem.timeline.recorder import TIMELINE_FILE, Recorder, read_timeline
from chaosmem.timeline.sources import Source, SourceSetup, register_source, target_label

__all__ = [
    "TIMELINE_FILE",
    "Recorder",
    "Source",
    "SourceSetup",
    "read_timeline",
    "register_source",
    "target_label",
]

# NB: imported for their register_source side effect: the Go and Prometheus timeline sources.
from chaosmem.gomem import source as _go_source  # noqa: F401
from chaosmem.prometheus import source as _prometheus_source  # noqa: F401
