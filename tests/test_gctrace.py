"""gctrace parsing on lines the demo service wrote with GODEBUG=gctrace=1 (Go 1.19)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from chaosmem.gomem.gctrace import MB, parse_gctrace, parse_line

LOG = Path(__file__).resolve().parent / "data" / "gomem" / "gctrace.log"


def test_parses_the_recorded_log_and_skips_other_lines() -> None:
    lines = LOG.read_text().splitlines()
    gcs = parse_gctrace(lines)
    assert len(gcs) == sum(1 for line in lines if line.startswith("gc "))
    first = gcs[0]
    assert (first.number, first.since_start, first.cpu_percent) == (1, 0.094, 17)
    assert first.pause_ms == 28.063  # sweep termination + mark termination, not the mark
    assert first.mark_ms == 100
    assert (first.heap_start, first.heap_end, first.heap_live, first.heap_goal) == (
        9 * MB, 9 * MB, 8 * MB, 4 * MB,
    )  # fmt: skip
    assert not first.forced
    assert [g.number for g in gcs] == sorted(g.number for g in gcs)


def test_forced_and_malformed_lines() -> None:
    forced = (
        "gc 7 @1.5s 2%: 0.1+0.2+0.3 ms clock, 0.1+0/0/0+0.1 ms cpu, 4->4->1 MB, 4 MB goal, "
        "0 MB stacks, 0 MB globals, 2 P (forced)"
    )
    parsed = parse_line(forced)
    assert parsed is not None and parsed.forced and parsed.pause_ms == 0.4
    assert parse_line(forced.replace("4->4->1", "4->x->1")) is None
    assert parse_line("gc " + "9" * 2000) is None
    assert parse_line("scvg: 0 MB released") is None


@given(st.text(max_size=300))
def test_never_raises(text: str) -> None:
    parse_line(text)
    parse_line("gc " + text)


@given(
    st.integers(1, 10**9),
    st.floats(0, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
    st.lists(st.integers(0, 10**6), min_size=4, max_size=4),
)
def test_round_trips_generated_lines(n: int, since: float, heap: list[int]) -> None:
    line = (
        f"gc {n} @{since}s 5%: 0.5+1.5+0.25 ms clock, 1+0/0/0+0.5 ms cpu, "
        f"{heap[0]}->{heap[1]}->{heap[2]} MB, {heap[3]} MB goal, 0 MB stacks, 0 MB globals, 2 P"
    )
    parsed = parse_line(line)
    assert parsed is not None
    assert parsed.number == n and parsed.pause_ms == 0.75
    assert parsed.heap_live == heap[2] * MB and parsed.heap_goal == heap[3] * MB
