"""ISO 8601 times: every spelling chaoslib, Kubernetes and people write, None for the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaosmem.timestamps import MAX_TEXT, iso_seconds, parse_iso

MOMENTS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31))
ZONES = st.builds(timezone, st.integers(-14 * 60, 14 * 60).map(lambda m: timedelta(minutes=m)))


@given(MOMENTS, ZONES)
def test_a_zoned_time_reads_back_exactly(moment: datetime, zone: timezone) -> None:
    aware = moment.replace(tzinfo=zone)
    assert iso_seconds(aware.isoformat()) == aware.timestamp()
    assert parse_iso(aware.isoformat()) == aware


@given(MOMENTS)
def test_a_naive_time_is_utc_and_z_is_utc(moment: datetime) -> None:
    utc = moment.replace(tzinfo=UTC).timestamp()
    assert iso_seconds(moment.isoformat()) == utc
    assert iso_seconds(moment.isoformat() + "Z") == utc


@given(st.text(max_size=80))
def test_any_text_is_a_time_or_none_never_an_error(text: str) -> None:
    seconds = iso_seconds(text)
    assert seconds is None or isinstance(seconds, float)
    if len(text) > MAX_TEXT:
        assert seconds is None


@pytest.mark.parametrize(
    "value",
    [None, 1700000000, 1.5, b"2026-01-02T03:04:05Z", "", "yesterday", "2026-13-01T00:00:00Z",
     "2026-01-02T03:04:05Z" + " " * MAX_TEXT],
)  # fmt: skip
def test_what_is_not_a_time_is_none(value: object) -> None:
    assert parse_iso(value) is None
    assert iso_seconds(value) is None


def test_the_kubernetes_and_chaoslib_spellings() -> None:
    assert (
        iso_seconds("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    )
    assert iso_seconds("2026-01-02T03:04:05.250000") == 1767323045.25
