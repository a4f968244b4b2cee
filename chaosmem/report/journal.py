"""Reading journals: the JSON file ``chaos run --journal-path`` writes, and chaosmem's part of it.

The control stores its findings as an extension of the journal,
``journal["extensions"] = [{"name": "chaosmem", "timeline": [...], "restored": [...], "run": id}]``.
A journal without it (an experiment that did not load the control) still gets a verdict and a
report, only without charts.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from chaosmem.errors import InvalidArgument

__all__ = [
    "EXTENSION",
    "Timeline",
    "TimelineLines",
    "as_dict",
    "as_list",
    "chaosmem_extension",
    "load_journal",
]

EXTENSION = "chaosmem"
_EXPECTED = "a Chaos Toolkit journal (the JSON file `chaos run --journal-path` writes)"


#: Deepest nesting a journal may have (Chaos Toolkit's own journals stay under 20 levels).
MAX_DEPTH = 64
#: A journal larger than this is refused. It is read as a stream (memory does not grow with
#: it), so this bounds only the time a report takes: ~2M indented samples make 1.8 GB.
MAX_BYTES = 8 << 30
#: One timeline record larger than this is not chaosmem's, and is skipped.
MAX_RECORD = 1 << 20
#: How much of the file is read at a time.
CHUNK = 1 << 20
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")


class _Text:
    """A UTF-8 file read forward a chunk at a time: the text in hand from ``pos`` on, and the byte
    offset in the file where that text starts. Nothing behind ``pos`` is kept once
    :meth:`forget` is called, so a walk over a 2 GB journal holds about one chunk."""

    def __init__(self, stream: BinaryIO, offset: int = 0) -> None:
        self.stream = stream
        stream.seek(offset)
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.base = offset  # the byte offset of text[0]
        self.eof = False

    def more(self) -> bool:
        """Read on (at least as much again as is pending, so a long value costs linear time);
        False at the end of the file."""
        if self.eof:
            return False
        data = self.stream.read(max(CHUNK, len(self.text) - self.pos))
        if not data:
            self.eof = True
            self.text += self.decoder.decode(b"", final=True)
            return False
        self.text += self.decoder.decode(data)
        return True

    def forget(self) -> None:
        """Drop the text before ``pos`` (only once it is a chunk: slicing costs a copy)."""
        if self.pos >= CHUNK:
            gone = self.text[: self.pos]
            self.base += len(gone) if gone.isascii() else len(gone.encode("utf-8"))
            self.text = self.text[self.pos :]
            self.pos = 0

    def offset(self) -> int:
        """The byte offset of ``pos`` in the file."""
        ahead = self.text[: self.pos]
        return self.base + (len(ahead) if ahead.isascii() else len(ahead.encode("utf-8")))


class Timeline:
    """The records of a journal's chaosmem timeline, read from the file one at a time, each time
    it is iterated.

    A long game day's journal is mostly timeline: holding all of it, as text or as Python objects,
    costs memory that grows with the run. This keeps only where the timeline's array starts in
    the file; each pass reads the file from there and decodes one record at a time (through
    ``transform`` of its text, when given: the redaction of its strings). Records that are not
    JSON objects, are larger than :data:`MAX_RECORD` or nest deeper than :data:`MAX_DEPTH` are
    skipped; a file that changed since it was loaded ends the pass where it stops making sense.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        count: int,
        transform: Callable[[str], str] | None = None,
    ) -> None:
        self.path = path
        self.offset = offset
        self.count = count
        self.transform = transform

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as stream:
            reader = _Reader(_Text(stream, self.offset))
            try:
                for _ in reader.items():
                    start = reader.src.pos
                    value = reader.value(check=False, keep=True)
                    raw = reader.src.text[start : reader.src.pos]
                    reader.src.forget()
                    if len(raw) > MAX_RECORD:
                        continue
                    record = self._record(raw, value)
                    if type(record) is dict and (
                        record.get("kind") == "sample" or not too_deep(record)
                    ):
                        yield record
            except (ValueError, RecursionError):
                return

    def _record(self, raw: str, value: Any) -> Any:
        if self.transform is None:
            return value
        changed = self.transform(raw)
        if changed == raw:  # NB: most records hold no secret: no second decode
            return value
        try:
            return json.loads(changed)
        except (ValueError, RecursionError):
            return None

    def with_transform(self, transform: Callable[[str], str]) -> Timeline:
        return Timeline(self.path, self.offset, self.count, transform)


class TimelineLines(Timeline):
    """A run's ``timeline.jsonl`` (the control's own copy, appended as the run went), read the
    same way: a line at a time, each time it is iterated. Lines torn by a crash, longer than
    :data:`MAX_RECORD` or without a numeric ``t`` are skipped."""

    def __init__(
        self, path: Path, count: int = 0, transform: Callable[[str], str] | None = None
    ) -> None:
        super().__init__(path, 0, count, transform)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as stream:
            while line := stream.readline(MAX_RECORD + 1):
                if len(line) > MAX_RECORD:
                    while line and not line.endswith(b"\n"):  # NB: skipped, never held whole
                        line = stream.readline(CHUNK)
                    continue
                raw = line.decode("utf-8", errors="replace")
                try:
                    value = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                record = self._record(raw, value)
                if (
                    type(record) is dict
                    and type(record.get("t")) in (int, float)
                    and (record.get("kind") == "sample" or not too_deep(record))
                ):
                    yield record

    def with_transform(self, transform: Callable[[str], str]) -> Timeline:
        return TimelineLines(self.path, self.count, transform)


class _Reader:
    """Walks a journal's text: containers by hand down to the timeline, values by json's C
    decoder. The chaosmem timeline is walked to check it but not kept (see :class:`Timeline`)."""

    def __init__(self, src: _Text, path: Path | None = None) -> None:
        self.src = src
        self.path = path

    def space(self) -> None:
        src = self.src
        while True:
            match = _SPACE.match(src.text, src.pos)
            src.pos = match.end() if match else src.pos
            if src.pos < len(src.text) or not src.more():
                return

    def _where(self) -> str:
        return f"byte {self.src.offset()}"

    def expect(self, char: str) -> None:
        self.space()
        if self.src.text[self.src.pos : self.src.pos + 1] != char:
            raise ValueError(f"expected {char!r} at {self._where()}")
        self.src.pos += 1

    def peek(self) -> str:
        self.space()
        return self.src.text[self.src.pos : self.src.pos + 1]

    def value(self, *, check: bool = True, keep: bool = False) -> Any:
        """The value at ``pos``, read on until it is whole. With ``keep``, the text before it is not dropped."""
        self.space()
        src = self.src
        if not keep:
            src.forget()
        while True:
            try:
                value, end = _DECODER.raw_decode(src.text, src.pos)
            except json.JSONDecodeError as exc:
                # NB: read on only when the value may go on past the text in hand (an error at
                # its end, or a string not closed in it): a broken journal is not read whole.
                cut = exc.pos >= len(src.text) - 8 or exc.msg.startswith("Unterminated string")
                if cut and src.more():
                    continue
                raise ValueError(f"{exc.msg} at {self._where()}") from None
            # NB: a number may go on in the next chunk ("-0." or "1e+" here, "5" there)
            if type(value) in (int, float) and end + 2 >= len(src.text) and src.more():
                continue
            break
        src.pos = end
        if check and too_deep(value):
            raise _TooDeep
        return value

    def members(self) -> Iterator[str]:
        """The keys of the object starting here, leaving ``pos`` at each key's value."""
        self.expect("{")
        if self.peek() == "}":
            self.src.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise ValueError(f"an object key before {self._where()} is not a string")
            self.expect(":")
            yield key
            if self.peek() == ",":
                self.src.pos += 1
                continue
            self.expect("}")
            return

    def items(self) -> Iterator[None]:
        """One step per item of the array starting here, ``pos`` at each item."""
        self.expect("[")
        if self.peek() == "]":
            self.src.pos += 1
            return
        src = self.src
        while True:
            self.space()
            yield None
            found = _COMMA.match(src.text, src.pos)  # NB: the common case, in one step
            if found is not None and found.end() < len(src.text):
                src.pos = found.end()
                continue
            if self.peek() == ",":
                src.pos += 1
                continue
            self.expect("]")
            return

    def timeline(self) -> Timeline:
        """The timeline array starting here, checked (each record decoded, then dropped)."""
        assert self.path is not None
        self.space()
        offset = self.src.offset()
        count = 0
        for _ in self.items():
            self.value(check=False)  # NB: checked when read, record by record
            count += 1
        return Timeline(self.path, offset, count)

    def extension(self) -> Any:
        if self.peek() != "{":
            return self.value()
        extension: dict[str, Any] = {}
        for key in self.members():
            if key == "timeline" and self.peek() == "[":
                extension[key] = self.timeline()
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
        if self.src.pos != len(self.src.text):
            raise ValueError(f"extra data at {self._where()}")
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
    is missing, unreadable, not a journal, larger than 8 GiB or nested deeper than 64 levels.

    The file is read as a stream; its chaosmem timeline is a :class:`Timeline`, read again from
    the file record by record each time it is iterated (keep the file until the report is
    rendered).
    """
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InvalidArgument(
                name, str(path), f"{_EXPECTED}; it is larger than {MAX_BYTES >> 30} GiB"
            )
        with path.open("rb") as stream:
            journal = _Reader(_Text(stream), path).journal()
    except FileNotFoundError:
        raise InvalidArgument(name, str(path), _EXPECTED + "; no such file") from None
    except (_TooDeep, RecursionError):
        raise InvalidArgument(
            name, str(path), f"{_EXPECTED}; it nests deeper than {MAX_DEPTH} levels"
        ) from None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(name, str(path), f"{_EXPECTED}; cannot read it ({exc})") from None
    except ValueError as exc:
        raise InvalidArgument(name, str(path), f"{_EXPECTED}; it is not JSON ({exc})") from None
    except OSError as exc:
        raise InvalidArgument(name, str(path), f"{_EXPECTED}; cannot read it ({exc})") from None
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
