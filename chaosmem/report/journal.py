"""Reading journals: the JSON file ``chaos run --journal-path`` writes, and chaosmem's part of it.

The control stores its findings as an extension of the journal,
``journal["extensions"] = [{"name": "chaosmem", "timeline": [...], "restored": [...], "run": id}]``.
A journal without it (an experiment that did not load the control) still gets a verdict and a
report, only without charts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chaosmem.errors import InvalidArgument

__all__ = ["EXTENSION", "Timeline", "as_dict", "as_list", "chaosmem_extension", "load_journal"]

EXTENSION = "chaosmem"
_EXPECTED = "a Chaos Toolkit journal (the JSON file `chaos run --journal-path` writes)"


#: Deepest nesting a journal may have (Chaos Toolkit's own journals stay under 20 levels).
MAX_DEPTH = 64
#: A journal larger than this is not one ``chaos run`` wrote for any run we could render.
MAX_BYTES = 1 << 30
#: One timeline record larger than this is not chaosmem's, and is skipped.
MAX_RECORD = 1 << 20
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


class Timeline:
    """The records of a journal's chaosmem timeline, decoded one at a time as they are read.

    A long game day's journal is mostly timeline: holding all its records as Python objects at
    once costs about eight times the file. This keeps the journal's text and where each record
    lies in it; each pass decodes one record at a time (through ``transform`` of its text, when
    given: the redaction of its strings). Records that are not JSON objects are skipped.
    """

    def __init__(
        self,
        text: str,
        spans: list[tuple[int, int]],
        transform: Callable[[str], str] | None = None,
    ) -> None:
        self.text = text
        self.spans = spans
        self.transform = transform

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for start, end in self.spans:
            raw = self.text[start:end]
            if self.transform is not None:
                raw = self.transform(raw)
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and (
                record.get("kind") == "sample" or not too_deep(record)
            ):
                yield record

    def with_transform(self, transform: Callable[[str], str]) -> Timeline:
        return Timeline(self.text, self.spans, transform)


class _Reader:
    """Walks a journal's text: containers by hand down to the timeline, values by json's C
    decoder. Only the chaosmem timeline is left undecoded (see :class:`Timeline`)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def space(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos

    def expect(self, char: str) -> None:
        self.space()
        if self.text[self.pos : self.pos + 1] != char:
            raise ValueError(f"expected {char!r} at character {self.pos}")
        self.pos += 1

    def peek(self) -> str:
        self.space()
        return self.text[self.pos : self.pos + 1]

    def value(self, *, check: bool = True) -> Any:
        self.space()
        value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        if check and too_deep(value):
            raise _TooDeep
        return value

    def members(self) -> Iterator[str]:
        """The keys of the object starting here, leaving ``pos`` at each key's value."""
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise ValueError(f"an object key at character {self.pos} is not a string")
            self.expect(":")
            yield key
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect("}")
            return

    def items(self) -> Iterator[None]:
        """One step per item of the array starting here, ``pos`` at each item."""
        self.expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            self.space()
            yield None
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect("]")
            return

    def spans(self) -> list[tuple[int, int]]:
        """Where each item of the array starting here lies (items are decoded to be skipped)."""
        found: list[tuple[int, int]] = []
        for _ in self.items():
            start = self.pos
            self.value(check=False)  # NB: checked when read, record by record
            if self.pos - start <= MAX_RECORD:
                found.append((start, self.pos))
        return found

    def extension(self) -> Any:
        if self.peek() != "{":
            return self.value()
        extension: dict[str, Any] = {}
        for key in self.members():
            if key == "timeline" and self.peek() == "[":
                extension[key] = Timeline(self.text, self.spans())
            else:
                extension[key] = self.value()
        return extension

    def journal(self) -> Any:
        if self.peek() != "{":
            return self.value()
        journal: dict[str, Any] = {}
        for key in self.members():
            if key == "extensions" and self.peek() == "[":
                extensions: list[Any] = []
                for _ in self.items():
                    extensions.append(self.extension())
                journal[key] = extensions
            else:
                journal[key] = self.value()
        self.space()
        if self.pos != len(self.text):
            raise ValueError(f"extra data at character {self.pos}")
        return journal


class _TooDeep(Exception):
    pass


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists and objects deeper than ``limit`` (checked without
    recursion, so that the check itself cannot overflow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def load_journal(path: Path, *, name: str = "JOURNAL") -> dict[str, Any]:
    """The journal at ``path``, refused with an :class:`InvalidArgument` naming ``name`` when it
    is missing, unreadable, not a journal, larger than 1 GiB or nested deeper than 64 levels.

    Its chaosmem timeline is a :class:`Timeline`, decoded record by record when read.
    """
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InvalidArgument(name, str(path), f"{_EXPECTED}; it is larger than 1 GiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(name, str(path), _EXPECTED + "; no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(name, str(path), f"{_EXPECTED}; cannot read it ({exc})") from None
    try:
        journal = _Reader(text).journal()
    except (_TooDeep, RecursionError):
        raise InvalidArgument(
            name, str(path), f"{_EXPECTED}; it nests deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:
        raise InvalidArgument(name, str(path), f"{_EXPECTED}; it is not JSON ({exc})") from None
    if (
        not isinstance(journal, dict)
        or not isinstance(journal.get("experiment"), dict)
        or not isinstance(journal.get("status"), str)
    ):
        raise InvalidArgument(name, str(path), _EXPECTED + " with 'experiment' and 'status'")
    return journal


def chaosmem_extension(journal: dict[str, Any]) -> dict[str, Any]:
    """chaosmem's extension of the journal, or an empty one; malformed parts are dropped."""
    for extension in as_list(journal.get("extensions")):
        if isinstance(extension, dict) and extension.get("name") == EXTENSION:
            timeline = extension.get("timeline")
            records: Timeline | list[dict[str, Any]] = (
                timeline
                if isinstance(timeline, Timeline)
                else [r for r in timeline if isinstance(r, dict)]
                if isinstance(timeline, list)
                else []
            )
            restored = extension.get("restored")
            return {
                **extension,
                "timeline": records,
                "restored": restored if isinstance(restored, list) else [],
            }
    return {"name": EXTENSION, "timeline": [], "restored": [], "run": None}


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: journals are read, never trusted."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a JSON list, else an empty one."""
    return value if isinstance(value, list) else []
