"""Sizes, rates, durations and percentages: the one place chaosmem reads a quantity.

Experiment files are written by people, so every parser here takes the spellings a Kubernetes
user already writes (``"512Mi"``, ``"1.5Gi"``, ``"800M"``, ``"50Mi/s"``, ``"90s"``, ``"2m"``) as
well as plain numbers, and refuses anything else with an :class:`InvalidArgument` that names the
argument, the value and what was expected.

Sizes follow the Kubernetes quantity grammar (a decimal number, an optional exponent, one
suffix), read by our own small parser rather than the ``kubernetes`` client's: importing that
package costs every activity and CLI start about a quarter of a second, and its parser reads
``"64mi"`` as 64 milli-binary bytes (rounded up: 1 byte) where a person meant 64 MiB. Here only
the whole-byte suffixes are sizes; a suffix that would mean a fraction of a byte (``m``, ``u``,
``n``, ``mi``, ``ki``, ...) is refused with the unit that was probably meant.

Every parser bounds the text's length and the exponent *before* any arithmetic, and refuses
non-finite numbers: ``"1e9999999"`` must be an error in microseconds, not a 475 MB integer.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from chaosmem.errors import InvalidArgument

__all__ = [
    "MAX_DURATION",
    "MAX_SIZE",
    "SIZE_SUFFIXES",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_fraction",
    "parse_quantity",
    "parse_rate",
    "parse_size",
    "parse_size_or_percent",
]

SIZE_EXPECTED = "a size such as '512Mi', '1.5Gi', '800M' or a whole number of bytes"
RATE_EXPECTED = "a rate such as '50Mi/s' or a number of bytes per second"
DURATION_EXPECTED = "a duration such as '90s', '2m', '1h30m', '250ms' or a number of seconds"

#: The largest size anything here accepts: 2**63 - 1 bytes, what a kernel counter can hold.
MAX_SIZE = (1 << 63) - 1
#: The longest duration: about 31 years. Longer is a typo, and would overflow the clocks it is
#: added to (``poll`` timeouts, deadlines).
MAX_DURATION = 1e9
#: A quantity's text is at most this long (``"9223372036854775807"`` is 19 characters).
MAX_TEXT = 64
#: Decimal exponents allowed in ``"1.5e3"``-style quantities; sizes top out near 1e19.
MAX_EXPONENT = 30

#: Whole-byte suffixes and their factors (Kubernetes' binary and decimal SI suffixes).
SIZE_SUFFIXES: dict[str, int] = {
    "": 1,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
    "Ei": 1 << 60,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
#: Sub-byte suffixes Kubernetes accepts (milli, micro, nano, and their binary forms) and the
#: mis-cased spellings of the real ones: each maps to the unit the writer most likely meant.
_HINTS: dict[str, str] = {}
for _letter in "kmgtpeun":
    for _first in (_letter, _letter.upper()):
        for _spelling in (_first, _first + "i", _first + "I"):
            if _spelling not in SIZE_SUFFIXES:
                # milli, micro and nano (m, u, n) are what "Mi" gets mistyped as
                _HINTS[_spelling] = "Mi" if _letter in "mun" else _letter.upper() + "i"
_QUANTITY = re.compile(
    r"(?P<number>[+]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE](?P<exp>[+-]?\d{1,4}))?(?P<suffix>[A-Za-z]{0,2})"
)
_DURATION_PART = re.compile(r"(\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _is_number(value: object) -> bool:
    # NB: bool is an int in Python; `true` in a JSON experiment is never a size.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_float(value: int | float) -> float | None:
    """``value`` as a finite float, or None (an int of 10**400 does not fit a float)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class QuantityError(ValueError):
    """Why a quantity's text was refused; ``hint`` names the unit probably meant."""

    def __init__(self, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.hint = hint


def parse_quantity(text: str) -> Decimal:
    """The exact value of a Kubernetes quantity with a whole-byte suffix (``"1.5Gi"``, ``"2e3"``).

    Bounded before any arithmetic: at most :data:`MAX_TEXT` characters and exponents within
    :data:`MAX_EXPONENT`, so the Decimal it builds has at most about 100 digits. Raises
    :class:`QuantityError` for anything else, with a hint for a sub-byte or mis-cased suffix.
    """
    if len(text) > MAX_TEXT:
        raise QuantityError(f"longer than {MAX_TEXT} characters")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError("not a number with an optional unit")
    suffix = match["suffix"]
    if suffix not in SIZE_SUFFIXES:
        hint = _HINTS.get(suffix)
        if hint is None:
            raise QuantityError(f"unknown unit {suffix!r}")
        raise QuantityError(f"unit {suffix!r} is not a whole-byte unit", hint)
    exponent = int(match["exp"] or 0)
    if abs(exponent) > MAX_EXPONENT:
        raise QuantityError(f"exponent {exponent} is out of range")
    try:
        number = Decimal(match["number"]).scaleb(exponent)
    except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
        raise QuantityError("not a number") from None
    return number * SIZE_SUFFIXES[suffix]


def parse_size(value: object, *, name: str, minimum: int = 0, maximum: int = MAX_SIZE) -> int:
    """Bytes from a Kubernetes quantity or a number; fractions of a byte round up.

    A sub-byte suffix is refused: ``"512m"`` is half a byte in Kubernetes and ``"64mi"`` 64
    milli-binary bytes, both almost always a typo for ``"Mi"``, so the error says so.
    """
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(name, value, SIZE_EXPECTED + " (a finite number)")
        if isinstance(value, int) and not -maximum <= value <= maximum:
            # NB: before Decimal(): converting an int of a million digits takes seconds.
            raise InvalidArgument(name, value, f"{SIZE_EXPECTED} of at most {format_size(maximum)}")
        number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = parse_quantity(value.strip())
        except QuantityError as exc:
            detail = f"did you mean {exc.hint!r}?" if exc.hint else str(exc)
            raise InvalidArgument(name, value, f"{SIZE_EXPECTED} ({detail})") from None
    else:
        raise InvalidArgument(name, value, SIZE_EXPECTED)
    if number < 0:
        raise InvalidArgument(name, value, SIZE_EXPECTED + " (not negative)")
    if number > maximum:
        raise InvalidArgument(name, value, f"{SIZE_EXPECTED} of at most {format_size(maximum)}")
    size = math.ceil(number)
    if size < minimum:
        raise InvalidArgument(name, value, f"{SIZE_EXPECTED} of at least {format_size(minimum)}")
    return size


def _plain_float(text: str) -> float | None:
    """A finite float from a short decimal text, or None (``float()`` would read "inf", "1_0")."""
    if len(text) > MAX_TEXT or _FLOAT.fullmatch(text) is None:
        return None
    return _finite_float(float(text))


_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")


def parse_fraction(
    value: object, *, name: str, low: float = 0.0, high: float = 1.0, open_low: bool = False
) -> float:
    """A number in ``[low, high]`` (``(low, high]`` with ``open_low``), or a percentage string."""
    number: float | None = None
    if _is_number(value):
        number = _finite_float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        number = _plain_float(text[:-1].strip() if percent else text)
        if number is not None and percent:
            number /= 100
    low_mark = "(" if open_low else "["
    expected = f"a number in {low_mark}{low:g}, {high:g}] or a percentage such as '50%'"
    if number is None:
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


def parse_rate(value: object, *, name: str, minimum: float = 1.0) -> float:
    """Bytes per second from ``"50Mi/s"`` (also ``/m``, ``/h``) or a number.

    At least ``minimum`` (one byte a second: a slower ramp is a typo, and a ramp of centuries
    would overflow every deadline computed from it) and at most :data:`MAX_SIZE` a second.
    """
    if _is_number(value):
        rate = _finite_float(value)  # type: ignore[arg-type]
        if rate is None or rate > MAX_SIZE:
            raise InvalidArgument(name, value, f"{RATE_EXPECTED} (finite, at most 8Ei/s)")
    elif isinstance(value, str) and "/" in value:
        size_text, _, per = value.strip().rpartition("/")
        if per not in _RATE_PER:
            raise InvalidArgument(name, value, RATE_EXPECTED)
        try:
            rate = parse_size(size_text, name=name) / _RATE_PER[per]
        except InvalidArgument as exc:
            detail = exc.expected.removeprefix(SIZE_EXPECTED)
            raise InvalidArgument(name, value, RATE_EXPECTED + detail) from None
    else:
        raise InvalidArgument(name, value, RATE_EXPECTED)
    if rate < minimum:
        raise InvalidArgument(name, value, f"{RATE_EXPECTED} of at least {minimum:g} byte(s)/s")
    return rate


def parse_duration(
    value: object, *, name: str, minimum: float = 0.0, maximum: float = MAX_DURATION
) -> float:
    """Seconds from ``"90s"``, ``"2m"``, ``"1h30m"``, ``"250ms"`` or a number of seconds,
    at most ``maximum`` (about 31 years by default)."""
    seconds: float | None = None
    if _is_number(value):
        seconds = _finite_float(value)  # type: ignore[arg-type]
    elif isinstance(value, str) and len(value) <= MAX_TEXT:
        text = value.strip()
        seconds = _plain_float(text)
        if seconds is None and text:
            pos, total = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                total += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
                pos = match.end()
            if pos == len(text):
                seconds = total
    if seconds is None or seconds < 0:
        raise InvalidArgument(name, value, DURATION_EXPECTED)
    if seconds > maximum:
        raise InvalidArgument(name, value, f"{DURATION_EXPECTED} of at most {maximum:g}s")
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
