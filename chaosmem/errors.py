"""The two ways chaosmem says no.

Both subclass Chaos Toolkit's ``ActivityFailed`` so that, inside ``chaos run``, a refused or
failed activity shows as an ordinary activity failure with our message, never a traceback; the
``chaosmem`` CLI prints the same message and exits 2.
"""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import ActivityFailed

__all__ = ["ChaosmemError", "InvalidArgument"]


class ChaosmemError(ActivityFailed):  # type: ignore[misc]
    """Something chaosmem tried could not be done; the message says what to do next."""


class InvalidArgument(ChaosmemError):
    """An argument was refused before anything was touched.

    The message always names the argument, the value received and what was expected, e.g.
    ``argument 'limit': got '12Q', expected a size such as '512Mi', '1.5Gi' or bytes``.
    """

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        super().__init__(f"argument '{name}': got {value!r}, expected {expected}")
