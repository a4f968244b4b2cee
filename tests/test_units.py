"""Units: every spelling a Kubernetes user writes, and a clear refusal for everything else."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.errors import InvalidArgument
from chaosmem.units import (
    _quantity_from_file,
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
    assert parse_size(f"{number}{suffix}", name="s") == number * SUFFIXES[suffix]


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
    assert math.isclose(
        parse_duration(text, name="d"), sum(n * scale[u] for n, u in parts), rel_tol=1e-9
    )


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


QUANTITY_FROM_FILE = _quantity_from_file()


@settings(deadline=None)
@given(st.from_regex(r"\A[0-9.eE+-]{0,8}(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m|u|n)?\Z"))
def test_sizes_parse_exactly_as_the_kubernetes_client_does(text: str) -> None:
    from kubernetes.utils.quantity import parse_quantity

    def outcome(parse: Any) -> object:
        try:
            return parse(text)
        except Exception as exc:
            return type(exc)

    assert outcome(QUANTITY_FROM_FILE) == outcome(parse_quantity)


def test_parsing_a_size_does_not_load_the_whole_kubernetes_client() -> None:
    code = (
        "import sys; from chaosmem.units import parse_size; "
        "assert parse_size('1.5Gi', name='x') == 1610612736; print('kubernetes' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
