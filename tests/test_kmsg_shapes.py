"""The kernel's OOM report in both of its shapes, from lines recorded on real kernels.

cgroup v1 on this host's 6.18 kernel prints ``memory.stat`` one line per record (memcg1 keys:
``rss``, ``cache``, ``mapped_file``); Debian 12's 6.1 kernel on cgroup v2 (the qemu lane) prints
it as one record whose newlines ``/dev/kmsg`` escapes as ``\\x0a`` (v2 keys: ``anon``, ``file``).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from chaosmem.targets.kmsg import LOG_LINE_MAX, OomReport, ReportParser, parse_record, stat_lines

DATA = Path(__file__).parent / "data"


def _records(path: Path) -> list[bytes]:
    """The raw records of a recording (one record a line; continuation lines start with a space)."""
    records: list[bytes] = []
    for line in path.read_bytes().splitlines():
        if line.startswith(b" ") and records:
            records[-1] += b"\n" + line
        else:
            records.append(line)
    return records


def _reports(records: list[bytes]) -> list[OomReport]:
    parser = ReportParser()
    out = []
    for raw in records:
        record = parse_record(raw)
        assert record is not None, raw
        if (report := parser.feed(*record)) is not None:
            out.append(report)
    return out


def test_the_v2_report_of_a_real_6_1_kernel() -> None:
    [report] = _reports(_records(DATA / "kmsg-oom-v2-6.1.txt"))
    assert (report.pid, report.command) == (124, "python")
    assert (report.usage, report.limit) == (32768 * 1024, 32768 * 1024)
    assert report.memcg == "/ci.slice/chaosmem/test-f370cd86"
    assert report.stat["anon"] == 33402880 and report.stat["thp_collapse_alloc"] == 0
    assert len(report.stat) == 51  # every line of the record, the last one included
    fields = report.as_fields()
    assert fields["stat"] == {"anon": 33402880, "file": 0, "mapped": 0, "shmem": 0}
    assert fields["source"] == "kernel log"


def test_the_v1_report_of_a_real_6_18_kernel() -> None:
    [report] = _reports(_records(DATA / "kmsg-oom-v1-6.18.txt"))
    assert (report.pid, report.usage) == (21776, 32768 * 1024)
    fields = report.as_fields()
    assert fields["stat"] == {"anon": 33398784, "file": 0, "mapped": 0, "shmem": 0, "swap": 0}


_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,30}", fullmatch=True)
_STATS = st.dictionaries(_KEYS, st.integers(0, 10**19), min_size=1, max_size=80)


def _report_records(stat: dict[str, int], *, one_record: bool, cut: int | None = None) -> list[str]:
    head = [
        "python invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "memory: usage 32768kB, limit 32768kB, failcnt 0",
        "Memory cgroup stats for /a/b:",
    ]
    lines = [f"{key} {value}" for key, value in stat.items()]
    if one_record:
        text = "\n".join(lines)[:cut]  # the kernel cuts the text, then /dev/kmsg escapes it
        body = [text.replace("\n", "\\x0a")]
    else:
        body = lines
    tail = [
        "Tasks state (memory values in pages):",
        "oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a/b,task_memcg=/a/b,task=python,pid=7,uid=0",
        "Memory cgroup out of memory: Killed process 7 (python) total-vm:1kB, anon-rss:2kB, "
        "file-rss:3kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0",
    ]
    return head + body + tail


def _parse(messages: list[str]) -> OomReport:
    parser = ReportParser()
    reports = [r for at, m in enumerate(messages) if (r := parser.feed(float(at), m)) is not None]
    assert len(reports) == 1
    return reports[0]


@given(_STATS, st.booleans())
def test_both_shapes_give_every_stat_line(stat: dict[str, int], one_record: bool) -> None:
    text = "\n".join(f"{k} {v}" for k, v in stat.items())
    text_fits = not one_record or len(text) < LOG_LINE_MAX - 1
    report = _parse(_report_records(stat, one_record=one_record))
    assert report.pid == 7 and report.usage == 32768 * 1024
    if text_fits:
        assert report.stat == stat
    else:  # a record that long may have been cut: its last line is not trusted
        assert report.stat == dict(list(stat.items())[:-1])


@given(_STATS)
def test_a_record_cut_by_the_kernel_never_gives_a_wrong_number(stat: dict[str, int]) -> None:
    """The kernel cuts a long record at LOG_LINE_MAX bytes, possibly mid-number: every line
    before the cut is read, the cut one never."""
    text = "\n".join(f"{k} {v}" for k, v in stat.items())[:LOG_LINE_MAX]
    report = _parse(_report_records(stat, one_record=True, cut=LOG_LINE_MAX))
    lines = text.split("\n")
    whole = lines[:-1] if len(text) >= LOG_LINE_MAX - 1 else lines
    assert report.stat == {key: int(value) for key, value in (line.split(" ") for line in whole)}
    assert all(stat[key] == value for key, value in report.stat.items())


def test_what_is_not_a_stat_record_ends_the_stats() -> None:
    assert stat_lines("Tasks state (memory values in pages):") == {}
    assert stat_lines("anon 1" + "0" * 30) == {}  # more digits than a 64-bit counter
    assert stat_lines("anon 5\\x0afile 6") == {"anon": 5, "file": 6}
