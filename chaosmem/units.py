"""Sizes, rates, durations and percentages: the one place chaosmem reads a quantity.

Experiment files are written by people, so every parser here takes the spellings a Kubernetes
user already writes (``"512Mi"``, ``"1.5Gi"``, ``"800M"``, ``"50Mi/s"``, ``"90s"``, ``"2m"``) as
well as plain numbers, and refuses anything else with an :class:`InvalidArgument` that names the
argument, the value and what was expected. Sizes use the kubernetes client's own quantity parser
so that a value means here exactly what it means in a pod spec.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from chaosmem.errors import InvalidArgument

__all__ = [
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_fraction",
    "parse_rate",
    "parse_size",
    "parse_size_or_percent",
]

SIZE_EXPECTED = "a size such as '512Mi', '1.5Gi', '800M' or a whole number of bytes"
RATE_EXPECTED = "a rate such as '50Mi/s' or a number of bytes per second"
DURATION_EXPECTED = "a duration such as '90s', '2m', '1h30m', '250ms' or a number of seconds"

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


@functools.cache
def _parse_quantity() -> Callable[[str], Decimal]:
    """The kubernetes client's own ``parse_quantity``, without importing the whole client.

    NB: ``import kubernetes.utils.quantity`` runs ``kubernetes/__init__``, which loads every API
    model (about a second here, a minute under qemu TCG) in each process that parses a size:
    every `chaos run`, stressor and ``chaosmem`` command. The quantity module itself needs only
    ``decimal``, so it is loaded from the installed client's file; an already imported client,
    or any surprise in its layout, means the ordinary import.
    """
    if "kubernetes" not in sys.modules:
        with contextlib.suppress(Exception):
            return _quantity_from_file()
    from kubernetes.utils.quantity import parse_quantity

    imported: Callable[[str], Decimal] = parse_quantity
    return imported


def _quantity_from_file() -> Callable[[str], Decimal]:
    """``parse_quantity`` from ``kubernetes/utils/quantity.py``, not running the package."""
    package = importlib.util.find_spec("kubernetes")
    where = package.submodule_search_locations if package else None
    if not where:
        raise ImportError("the kubernetes client is not installed as a package")
    path = Path(next(iter(where))) / "utils" / "quantity.py"
    spec = importlib.util.spec_from_file_location("chaosmem._k8s_quantity", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse: Callable[[str], Decimal] = module.parse_quantity
    return parse


def _is_number(value: object) -> bool:
    # NB: bool is an int in Python; `true` in a JSON experiment is never a size.
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_size(value: object, *, name: str, minimum: int = 0) -> int:
    """Bytes from a Kubernetes quantity or a number; fractions of a byte round up.

    The lowercase ``m`` suffix (milli) is refused: ``"512m"`` is half a byte in Kubernetes and
    almost always a typo for ``"512Mi"``, so the error says so.
    """
    if _is_number(value):
        number = Decimal(str(value))
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("m"):
            raise InvalidArgument(
                name, value, SIZE_EXPECTED + " ('m' is milli: did you mean 'Mi'?)"
            )
        try:
            number = _parse_quantity()(text)
        except (ValueError, InvalidOperation, TypeError):
            raise InvalidArgument(name, value, SIZE_EXPECTED) from None
    else:
        raise InvalidArgument(name, value, SIZE_EXPECTED)
    if not number.is_finite() or number < 0:
        raise InvalidArgument(name, value, SIZE_EXPECTED + " (not negative)")
    size = math.ceil(number)
    if size < minimum:
        raise InvalidArgument(name, value, f"{SIZE_EXPECTED} of at least {format_size(minimum)}")
    return size


def parse_fraction(
    value: object, *, name: str, low: float = 0.0, high: float = 1.0, open_low: bool = False
) -> float:
    """A number in ``[low, high]`` (``(low, high]`` with ``open_low``), or a percentage string."""
    number: float | None = None
    if _is_number(value):
        number = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            number = None
    low_mark = "(" if open_low else "["
    expected = f"a number in {low_mark}{low:g}, {high:g}] or a percentage such as '50%'"
    if number is None or not math.isfinite(number):
        raise InvalidArgument(name, value, expected)
    if number > high or number < low or (open_low and number == low):
        raise InvalidArgument(name, value, expected)
    return number


def parse_size_or_percent(value: object, *, name: str, whole: int | None, minimum: int = 0) -> int:
    """Bytes, where a percentage such as ``"90%"`` means that share of ``whole``.

    ``whole`` is what the percentage is of (a target's memory limit); ``None`` means there is
    nothing to take a share of, and a percentage is then refused rather than guessed.
    """
    if isinstance(value, str) and value.strip().endswith("%"):
        share = parse_fraction(value, name=name, low=0.0, high=100.0, open_low=True)
        if whole is None:
            raise InvalidArgument(name, value, "an absolute size: the target has no memory limit")
        size = math.ceil(whole * share)
        if size < minimum:
            raise InvalidArgument(name, value, f"a share of at least {format_size(minimum)}")
        return size
    return parse_size(value, name=name, minimum=minimum)


def parse_rate(value: object, *, name: str) -> float:
    """Bytes per second from ``"50Mi/s"`` (also ``/m``, ``/h``) or a positive number."""
    if _is_number(value):
        rate = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str) and "/" in value:
        size_text, _, per = value.strip().rpartition("/")
        if per not in _RATE_PER:
            raise InvalidArgument(name, value, RATE_EXPECTED)
        try:
            rate = parse_size(size_text, name=name) / _RATE_PER[per]
        except InvalidArgument:
            raise InvalidArgument(name, value, RATE_EXPECTED) from None
    else:
        raise InvalidArgument(name, value, RATE_EXPECTED)
    if not math.isfinite(rate) or rate <= 0:
        raise InvalidArgument(name, value, RATE_EXPECTED + " (above zero)")
    return rate


def parse_duration(value: object, *, name: str, minimum: float = 0.0) -> float:
    """Seconds from ``"90s"``, ``"2m"``, ``"1h30m"``, ``"250ms"`` or a number of seconds."""
    seconds: float | None = None
    if _is_number(value):
        seconds = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, total = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                total += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
                pos = match.end()
            if pos == len(text) and pos > 0:
                seconds = total
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(name, value, DURATION_EXPECTED)
    if seconds < minimum:
        raise InvalidArgument(name, value, f"{DURATION_EXPECTED} of at least {minimum:g}s")
    return seconds


def format_size(size: float | None) -> str:
    """A short human spelling in binary units: ``536870912`` -> ``"512Mi"``; None -> "unlimited"."""
    if size is None:
        return "unlimited"
    for unit, scale in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if abs(size) >= scale:
            return f"{size / scale:.4g}{unit}"
    return f"{size:.0f}B"


def format_duration(seconds: float) -> str:
    """``125.0`` -> ``"2m5s"``; sub-second values keep milliseconds."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs:.3g}s" if secs else "",
    ]
    return "".join(parts) or "0s"
