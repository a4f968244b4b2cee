"""The restore ledger: written before a change, folded back into open entries, torn lines survived."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from chaosmem.ledger import Entry, Ledger, parse_ledger, register_undo
from chaosmem.rollback import rollback

UNDONE: list[str] = []


@register_undo("test-note")
def _undo_note(entry: Entry) -> str:
    UNDONE.append(entry.undo["note"])
    return f"undid {entry.undo['note']}"


def test_open_close_and_rollback_newest_first(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    first = ledger.record(kind="test-note", target={"type": "x"}, undo={"note": "first"})
    ledger.record(kind="test-note", target={"type": "x"}, undo={"note": "second"})
    closed = ledger.record(kind="test-note", target={"type": "x"}, undo={"note": "closed"})
    ledger.close(closed, "not-applied")
    assert [e.undo["note"] for e in ledger.read().open()] == ["first", "second"]
    UNDONE.clear()
    steps = rollback(tmp_path)
    assert UNDONE == ["second", "first"]
    assert all(s.ok for s in steps)
    assert rollback(tmp_path) == []  # a second rollback finds nothing open
    assert (
        ledger.read().entries[0].id == first.id and ledger.read().entries[0].outcome == "restored"
    )


def test_torn_last_line_is_skipped_and_next_append_starts_clean(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record(kind="test-note", target={}, undo={"note": "a"})
    with ledger.path.open("a") as out:
        out.write('{"op": "open", "id": "half')  # a crash mid-write
    ledger.record(kind="test-note", target={}, undo={"note": "b"})
    read = ledger.read()
    assert [e.undo["note"] for e in read.open()] == ["a", "b"]
    assert read.torn == [2]


def test_rollback_reports_a_failing_undo_and_runs_the_rest(tmp_path: Path) -> None:
    @register_undo("test-broken")
    def _broken(entry: Entry) -> str:
        raise OSError("device on fire")

    ledger = Ledger(tmp_path)
    ledger.record(kind="test-note", target={}, undo={"note": "ok"})
    ledger.record(kind="test-broken", target={}, undo={})
    steps = rollback(tmp_path)
    assert [s.ok for s in steps] == [False, True]
    assert "device on fire" in (steps[0].error or "")
    assert [e.kind for e in ledger.read().open()] == ["test-broken"]  # still open: try again later


def _append_many(path: str, tag: int) -> None:
    ledger = Ledger(Path(path))
    for i in range(50):
        ledger.record(kind="test-note", target={"writer": tag}, undo={"note": f"{tag}-{i}"})


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), n)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    read = Ledger(tmp_path).read()
    assert read.torn == [] and len(read.open()) == 200


record = st.fixed_dictionaries(
    {
        "op": st.just("open"),
        "id": st.uuids().map(lambda u: u.hex),
        "kind": st.sampled_from(["cgroup-limit", "service", "stressor"]),
        "target": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "undo": st.dictionaries(st.text(max_size=5), st.integers() | st.none(), max_size=3),
        "run": st.none() | st.text(max_size=8),
        "at": st.floats(0, 2e9),
        "pid": st.integers(1, 1 << 22),
    }
)


@given(st.lists(record, max_size=20), st.data())
def test_parse_roundtrip_with_closes(records: list[dict[str, object]], data: st.DataObject) -> None:
    closes = data.draw(
        st.sets(st.sampled_from([r["id"] for r in records])) if records else st.just(set())
    )
    lines = [json.dumps(r) for r in records] + [
        json.dumps({"op": "close", "id": i, "outcome": "restored", "at": 1.0}) for i in closes
    ]
    read = parse_ledger("\n".join(lines))
    assert read.torn == []
    assert {e.id for e in read.open()} == {r["id"] for r in records} - closes


@given(st.text())
def test_garbage_never_raises(text: str) -> None:
    read = parse_ledger(text)
    assert all(isinstance(e, Entry) for e in read.entries)
