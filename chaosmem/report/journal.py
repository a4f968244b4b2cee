"""Reading journals: the JSON file ``chaos run --journal-path`` writes, and chaosmem's part of it.

The control stores its findings as an extension of the journal,
``journal["extensions"] = [{"name": "chaosmem", "timeline": [...], "restored": [...], "run": id}]``.
A journal without it (an experiment that did not load the control) still gets a verdict and a
report, only without charts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaosmem.errors import InvalidArgument

__all__ = ["EXTENSION", "as_dict", "as_list", "chaosmem_extension", "load_journal"]

EXTENSION = "chaosmem"
_EXPECTED = "a Chaos Toolkit journal (the JSON file `chaos run --journal-path` writes)"


def load_journal(path: Path, *, name: str = "JOURNAL") -> dict[str, Any]:
    """The journal at ``path``, refused with an :class:`InvalidArgument` naming ``name`` when it
    is missing, unreadable or not a journal."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(name, str(path), _EXPECTED + "; no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(name, str(path), f"{_EXPECTED}; cannot read it ({exc})") from None
    try:
        journal = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(name, str(path), f"{_EXPECTED}; it is not JSON ({exc})") from None
    if (
        not isinstance(journal, dict)
        or not isinstance(journal.get("experiment"), dict)
        or not isinstance(journal.get("status"), str)
    ):
        raise InvalidArgument(name, str(path), _EXPECTED + " with 'experiment' and 'status'")
    return journal


def chaosmem_extension(journal: dict[str, Any]) -> dict[str, Any]:
    """chaosmem's extension of the journal, or an empty one; malformed parts are dropped."""
    for extension in as_list(journal.get("extensions")):
        if isinstance(extension, dict) and extension.get("name") == EXTENSION:
            timeline = extension.get("timeline")
            records = (
                [r for r in timeline if isinstance(r, dict)] if isinstance(timeline, list) else []
            )
            restored = extension.get("restored")
            return {
                **extension,
                "timeline": records,
                "restored": restored if isinstance(restored, list) else [],
            }
    return {"name": EXTENSION, "timeline": [], "restored": [], "run": None}


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: journals are read, never trusted."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a JSON list, else an empty one."""
    return value if isinstance(value, list) else []
