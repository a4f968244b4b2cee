"""Units: every spelling a Kubernetes user writes, and a clear refusal for everything else."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosmem.errors import InvalidArgument
from chaosmem.units import (
    MAX_DURATION,
    MAX_SIZE,
    SIZE_SUFFIXES,
    format_size,
    parse_duration,
    parse_fraction,
    parse_rate,
    parse_size,
    parse_size_or_percent,
)

SUFFIXES = {
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", 512 << 20),
        ("1.5Gi", 3 << 29),
        ("800M", 800_000_000),
        (4096, 4096),
        ("4096", 4096),
        ("0", 0),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text, name="limit") == expected


@pytest.mark.parametrize(
    "bad", ["-1Mi", "12Q", "", "Mi", "512m", True, None, [1], float("nan"), -5, "1e400Gi x"]
)
def test_bad_sizes_name_argument_and_value(bad: object) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_size(bad, name="limit")
    assert "argument 'limit'" in str(info.value)
    assert repr(bad) in str(info.value)


def test_milli_suffix_hint() -> None:
    with pytest.raises(InvalidArgument, match="did you mean 'Mi'"):
        parse_size("512m", name="size")


@given(st.integers(min_value=0, max_value=1 << 50), st.sampled_from(sorted(SUFFIXES)))
def test_size_suffix_roundtrip(number: int, suffix: str) -> None:
    expected = number * SUFFIXES[suffix]
    if expected <= MAX_SIZE:
        assert parse_size(f"{number}{suffix}", name="s") == expected
    else:
        with pytest.raises(InvalidArgument, match="at most"):
            parse_size(f"{number}{suffix}", name="s")


@given(st.integers(min_value=0, max_value=1 << 60))
def test_integer_sizes_are_bytes(number: int) -> None:
    assert parse_size(number, name="s") == number
    assert parse_size(str(number), name="s") == number


@given(st.text(max_size=20))
def test_size_never_raises_anything_but_invalid_argument(text: str) -> None:
    try:
        value = parse_size(text, name="s")
    except InvalidArgument as exc:
        assert exc.name == "s"
    else:
        assert isinstance(value, int) and value >= 0


def test_percent_of_limit() -> None:
    assert parse_size_or_percent("90%", name="size", whole=1000) == 900
    assert parse_size_or_percent("64Mi", name="size", whole=None) == 64 << 20
    with pytest.raises(InvalidArgument, match="no memory limit"):
        parse_size_or_percent("50%", name="size", whole=None)
    with pytest.raises(InvalidArgument):
        parse_size_or_percent("0%", name="size", whole=1000)


@pytest.mark.parametrize(
    ("text", "expected"), [("50Mi/s", 50 << 20), ("60Mi/m", 1 << 20), (1024, 1024.0)]
)
def test_rates(text: object, expected: float) -> None:
    assert parse_rate(text, name="growth_rate") == expected


@pytest.mark.parametrize("bad", ["50Mi", "50Mi/y", "/s", "-5Mi/s", 0, "0/s", "x/s", False])
def test_bad_rates(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="argument 'growth_rate'"):
        parse_rate(bad, name="growth_rate")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90),
        ("2m", 120),
        ("1h", 3600),
        ("1h30m", 5400),
        ("250ms", 0.25),
        (1.5, 1.5),
        ("3", 3),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text, name="hold") == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["x", "2 m", "m2", "-3s", -1, "1s2", "", "s", None, True, "inf"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="argument 'hold'"):
        parse_duration(bad, name="hold")


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h", "d"])),
        min_size=1,
        max_size=4,
    )
)
def test_compound_durations(parts: list[tuple[int, str]]) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    text = "".join(f"{n}{u}" for n, u in parts)
    expected = sum(n * scale[u] for n, u in parts)
    if expected > MAX_DURATION:
        with pytest.raises(InvalidArgument, match="at most"):
            parse_duration(text, name="d")
    else:
        assert math.isclose(parse_duration(text, name="d"), expected, rel_tol=1e-9)


def test_fractions() -> None:
    assert parse_fraction("50%", name="fraction") == 0.5
    assert parse_fraction(0.25, name="fraction") == 0.25
    for bad in (0, 1.5, "150%", "x", None):
        with pytest.raises(InvalidArgument):
            parse_fraction(bad, name="fraction", open_low=True)


def test_format_size() -> None:
    assert format_size(512 << 20) == "512Mi"
    assert format_size(None) == "unlimited"
    assert format_size(100) == "100B"


# -- issue 8.1: no suffix silently means a fraction of a byte -----------------------------------

#: Every suffix Kubernetes' quantity grammar knows (binary, decimal SI, sub-byte), in every case
#: spelling, plus the binary "i" form of each letter: the parser must accept exactly the
#: whole-byte ones and refuse the rest with the unit that was probably meant.
_LETTERS = "kKmMgGtTpPeEuUnN"
ALL_SUFFIXES = sorted(
    {
        spelled
        for letter in _LETTERS
        for spelled in (letter, letter + "i", letter + "I", letter.upper() + "i", letter + "I")
    }
)


@pytest.mark.parametrize("text", ["64mi", "1ki", "500m", "3u", "7n", "2MI", "1gi", "5g", "9KI"])
def test_sub_byte_and_miscased_suffixes_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"did you mean '[KMGTPE]i'\?") as info:
        parse_size(text, name="size")
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["64mi", "500m", "3u", "7n", "2mI", "1ni", "4ui"])
def test_milli_micro_nano_hint_mebibytes(text: str) -> None:
    with pytest.raises(InvalidArgument, match="did you mean 'Mi'"):
        parse_size(text, name="size")


@pytest.mark.parametrize("text", ["50mi/s", "500m/s", "1ki/s", "3u/m"])
def test_sub_byte_rates_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"argument 'growth_rate'.*did you mean '[KM]i'"):
        parse_rate(text, name="growth_rate")


@given(st.integers(min_value=1, max_value=1 << 20), st.sampled_from(ALL_SUFFIXES))
def test_every_suffix_in_both_cases_is_a_whole_byte_unit_or_refused(
    number: int, suffix: str
) -> None:
    """Property over every suffix spelling: accepted means exactly number * factor bytes (an
    integer, never a fraction rounded up); refused means an InvalidArgument with a hint."""
    for text in (f"{number}{suffix}", f"{number}{suffix}/s"):
        parse = parse_size if "/" not in text else parse_rate
        try:
            value = parse(text, name="x")
        except InvalidArgument as exc:
            if suffix in SIZE_SUFFIXES:
                assert number * SIZE_SUFFIXES[suffix] > MAX_SIZE
                assert "at most" in exc.expected
            else:
                assert "did you mean" in exc.expected
        else:
            assert suffix in SIZE_SUFFIXES
            assert value == number * SIZE_SUFFIXES[suffix]
            assert value >= number  # never a fraction of what was written


def test_accepted_suffixes_are_the_whole_byte_ones() -> None:
    accepted = {s for s in ALL_SUFFIXES if _accepts(f"3{s}")}
    assert accepted == {"k", "K", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}


def _accepts(text: str) -> bool:
    try:
        parse_size(text, name="x")
    except InvalidArgument:
        return False
    return True


# -- issue 9.2: bounded before any arithmetic -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1e9999999", "not a number with an optional unit"),  # the exponent's digits are bounded
        ("1e99999", "not a number with an optional unit"),
        ("1e400", "exponent 400 is out of range"),
        ("9" * 100_000, "longer than 64 characters"),
        ("1e9999999Gi", "not a number with an optional unit"),
    ],
)
def test_huge_exponent_is_refused_before_any_arithmetic(text: str, reason: str) -> None:
    """Before: 20 s and 475 MB building a 10-million-digit integer. The bound comes first now.

    Counted, not timed: the refusal names the bound that caught the text, and what the parse
    allocates (tracemalloc's peak, the same on any machine) is a few times the text's own size
    (the error quotes it), never the value's: 10**9999999 alone would take over 4 MB.
    """
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(InvalidArgument, match="argument 'limit'") as refused:
            parse_size(text, name="limit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.expected.endswith(f"({reason})")
    assert peak < 4 * len(text) + 64 * 1024, f"{peak} bytes allocated to refuse {len(text)}"


@pytest.mark.parametrize(
    "bad",
    [
        "16Ei",
        "18446744073709551616",
        "1e20",
        "1e400",
        10**400,
        -(10**400),
        float("inf"),
        float("-inf"),
        float("nan"),
        "Infinity",
        "NaN",
        "1_000",
        " 1e-99999",
    ],
)
def test_sizes_out_of_range_or_not_finite(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="argument 'limit'"):
        parse_size(bad, name="limit")


@pytest.mark.parametrize(
    ("parse", "bad"),
    [
        (parse_rate, "1e400/s"),
        (parse_rate, 10**400),
        (parse_rate, float("inf")),
        (parse_rate, 1e-300),
        (parse_rate, "1e9999999/s"),
        (parse_duration, 10**400),
        (parse_duration, "1e400"),
        (parse_duration, 1e308),
        (parse_duration, "9" * 10_000 + "s"),
        (parse_duration, float("nan")),
        (parse_fraction, 10**400),
        (parse_fraction, "1e400%"),
        (parse_fraction, float("nan")),
        (parse_fraction, "nan"),
    ],
)
def test_rates_durations_fractions_refuse_huge_and_non_finite(parse: Any, bad: object) -> None:
    with pytest.raises(InvalidArgument, match="argument 'x'"):
        parse(bad, name="x")


_HUGE_NUMBERS = st.one_of(
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)
_QUANTITY_TEXT = st.builds(
    lambda number, exp, suffix, per: f"{number}{exp}{suffix}{per}",
    st.one_of(st.integers(-(10**30), 10**30).map(str), st.floats().map(repr)),
    st.one_of(st.just(""), st.integers(-100_000, 100_000).map(lambda e: f"e{e}")),
    st.sampled_from([*ALL_SUFFIXES, "", "%", "s", "ms", "h", "x"]),
    st.sampled_from(["", "/s", "/m", "/h", "/y"]),
)


@given(st.one_of(_HUGE_NUMBERS, _QUANTITY_TEXT, st.text(max_size=80)))
def test_every_parser_returns_a_bounded_value_or_invalid_argument(value: object) -> None:
    """Fuzz: whatever comes in, each parser gives a finite, in-range value or InvalidArgument
    naming the argument, never OverflowError/ValueError/RecursionError from the arithmetic."""
    for parse, bound in (
        (parse_size, MAX_SIZE),
        (parse_rate, MAX_SIZE),
        (parse_duration, MAX_DURATION),
        (parse_fraction, 1.0),
    ):
        try:
            result = parse(value, name="x")
        except InvalidArgument as exc:
            assert exc.name == "x"
        else:
            assert math.isfinite(result) and 0 <= result <= bound


def test_units_does_not_import_kubernetes() -> None:
    """Issue 8.10: parsing a quantity must not pay for the kubernetes client."""
    import subprocess
    import sys

    code = (
        "import sys, chaosmem.limits.actions, chaosmem.limits.probes, chaosmem.stress.actions, "
        "chaosmem.local.actions, chaosmem.traffic.actions, chaosmem.control, chaosmem.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parsing_a_size_does_not_load_the_whole_kubernetes_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from chaosmem.units import parse_size; "
        "assert parse_size('1.5Gi', name='x') == 1610612736; print('kubernetes' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
