"""Property tests for the engine's block plan and the split between workers (no processes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem.stress.engine import LARGE_BLOCK, PAGE, SMALL_BLOCK, plan_blocks
from chaosmem.stress.inject import StressRequest

sizes = st.integers(min_value=0, max_value=64 << 30)
fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(size=sizes, fragmentation=fractions)
def test_plan_covers_the_size_with_the_asked_mix(size: int, fragmentation: float) -> None:
    plan = plan_blocks(size, fragmentation=fragmentation)
    lengths = [length for length, _ in plan.blocks]
    assert sum(lengths) == plan.size == -(-size // PAGE) * PAGE
    assert all(length > 0 and length % PAGE == 0 for length in lengths)
    assert len(plan.blocks) <= 16384
    # exact to the page: the small bytes are f * size
    assert abs(plan.small_bytes - fragmentation * plan.size) <= PAGE
    for length, small in plan.blocks:
        assert length <= (plan.small_block if small else plan.large_block)
    if fragmentation == 0.0:
        assert plan.small_bytes == 0
    if fragmentation == 1.0:
        assert plan.large_bytes == 0


@settings(max_examples=100, deadline=None)
@given(size=st.integers(min_value=1, max_value=4 << 30), fragmentation=fractions)
def test_plan_interleaves_so_every_prefix_keeps_the_mix(size: int, fragmentation: float) -> None:
    """During the ramp, the share of small bytes never strays more than a block from its goal."""
    plan = plan_blocks(size, fragmentation=fragmentation)
    small_total, large_total = plan.small_bytes, plan.large_bytes
    small = large = 0
    for length, is_small in plan.blocks:
        if is_small:
            small += length
        else:
            large += length
        if small_total and large_total:
            assert (
                abs(small / small_total - large / large_total)
                <= max(plan.small_block / small_total, plan.large_block / large_total) + 1e-9
            )


@settings(max_examples=100, deadline=None)
@given(size=st.integers(min_value=1, max_value=4 << 30), fragmentation=fractions)
def test_fragmented_release_frees_every_other_block_of_each_size(
    size: int, fragmentation: float
) -> None:
    plan = plan_blocks(size, fragmentation=fragmentation)
    freed = set(plan.fragmented_release())
    for kind in (True, False):
        indexes = [i for i, (_, small) in enumerate(plan.blocks) if small is kind]
        assert [i in freed for i in indexes] == [n % 2 == 1 for n in range(len(indexes))]


def test_half_fragmentation_of_200mi_is_1600_small_and_13_large() -> None:
    plan = plan_blocks(200 << 20, fragmentation=0.5)
    summary = plan.summary()
    assert (summary["small_blocks"], summary["large_blocks"]) == (1600, 13)
    assert summary["small_share"] == 0.5
    assert (plan.small_block, plan.large_block) == (SMALL_BLOCK, LARGE_BLOCK)
    kinds = "".join("s" if small else "L" for _, small in plan.blocks)
    runs = [len(run) for run in kinds.split("L")]
    # runs of 8Mi of small blocks between large ones
    assert runs[0] == 1 and set(runs[1:-1]) == {128}


def test_huge_plans_grow_their_blocks_instead_of_exhausting_mappings() -> None:
    plan = plan_blocks(20 << 30, fragmentation=1.0)
    assert len(plan.blocks) <= 16384 and plan.small_block > SMALL_BLOCK


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan")])
def test_plan_refuses_a_fragmentation_outside_0_1(bad: float) -> None:
    with pytest.raises(ValueError):
        plan_blocks(1 << 20, fragmentation=bad)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=64 << 30),
    workers=st.integers(min_value=1, max_value=64),
    rate=st.one_of(st.none(), st.floats(min_value=1.0, max_value=1e10)),
    hold=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e5)),
    wait=st.booleans(),
)
def test_workers_share_size_and_rate(
    size: int, workers: int, rate: float | None, hold: float | None, wait: bool
) -> None:
    if size < workers * PAGE:
        size = workers * PAGE
    request = StressRequest(size, rate, 0.25, hold, "all", workers, wait, False, False)
    specs = request.engine_specs()
    assert len(specs) == workers
    total = sum(s.size for s in specs)
    assert size <= total < size + workers * PAGE
    assert max(s.size for s in specs) - min(s.size for s in specs) <= PAGE
    for spec in specs:
        assert spec.size % PAGE == 0
        assert spec.rate == (rate / workers if rate else None)
        assert spec.hold == (hold if hold is not None else (0.0 if wait else None))
