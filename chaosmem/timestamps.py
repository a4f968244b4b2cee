"""ISO 8601 times as chaoslib, Kubernetes and people write them: the one reader of that text.

Bounded (at most :data:`MAX_TEXT` characters) and never raising: what is not a time is None,
and each caller decides what that means (a refused argument, a journal time left out).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["MAX_TEXT", "iso_seconds", "parse_iso"]

#: ``"2026-01-02T03:04:05.123456+00:00"`` is 32 characters; longer is not a time.
MAX_TEXT = 64


def parse_iso(value: object) -> datetime | None:
    """The time ``value`` spells (``Z`` for UTC accepted), with its zone if it has one; else None."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def iso_seconds(value: object) -> float | None:
    """Unix seconds of an ISO 8601 time, or None; a time without a zone is UTC (chaoslib
    before 1.20 wrote naive UTC times in its journals)."""
    moment = parse_iso(value)
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
