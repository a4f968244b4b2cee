"""``python -m chaosmem.traffic.pod``: one pod of a replay Job (see :mod:`chaosmem.traffic.kubejob`).

Reads the replay from ``$CHAOSMEM_REPLAY`` (the options, the shard count, the agreed start
time) and its shard from ``$JOB_COMPLETION_INDEX`` (set by Kubernetes for an Indexed Job). The
capture is in ``$CHAOSMEM_CAPTURE_DIR`` (a ConfigMap or PVC volume), or is first downloaded
there from ``capture_url``. What the Job's spec shows masked (credential headers, a URL's
password) comes from the replay's Secret in ``$CHAOSMEM_REPLAY_SECRETS`` and is merged back
here, in memory only: it is removed from the environment at once, and nothing the pod prints
holds it (its summary carries the masked options). The pod compiles the capture and replays
its shard from the start time.

What it prints is what the coordinator (:mod:`chaosmem.traffic.podlogs`) follows live: each
second's line as that second ends (``chaosmem-second {"seq": n, ...}``, ``seq`` counting from 0,
so that a follower which reconnects recognises the lines it already has), and, once the replay
has ended, its summary as its last line (``chaosmem-summary {...}``). SIGTERM (the Job deleted,
its deadline) stops it gracefully: the last second and the summary still print.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import sys
import threading
import urllib.request
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from chaosmem.traffic.compile import compile_capture
from chaosmem.traffic.options import parse_options
from chaosmem.traffic.replay import run_engine
from chaosmem.traffic.schedule import Schedule

__all__ = ["LOG_SECOND", "LOG_SUMMARY", "SECRET_ENV", "SecondsPrinter", "main", "merge_secrets"]

LOG_SECOND = "chaosmem-second "
LOG_SUMMARY = "chaosmem-summary "
#: The env var the kubelet fills from the replay's Secret (``valueFrom.secretKeyRef``).
SECRET_ENV = "CHAOSMEM_REPLAY_SECRETS"
_SECRET_OPTIONS = frozenset({"headers", "target_url"})
#: How often the printer looks for a new second: well under the second it waits for.
PRINT_EVERY = 0.2


class SecondsPrinter:
    """Prints the engine's ``seconds.jsonl`` to the log as it grows, each line numbered.

    A thread that tails the file the engine writes (so the engine itself needs no hook): only
    complete lines, in order, each once. :meth:`finish` prints what is left after the engine
    returned (its last, partial second).
    """

    def __init__(self, path: Path, out: IO[str]) -> None:
        self.path = path
        self.out = out
        self.seq = 0
        self._offset = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaosmem-seconds", daemon=True)

    def start(self) -> SecondsPrinter:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(PRINT_EVERY):
            self._print_new()

    def _print_new(self) -> None:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._offset)
                chunk = stream.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            self.out.write(
                LOG_SECOND + json.dumps({**line, "seq": self.seq}, sort_keys=True) + "\n"
            )
            self.seq += 1
        if complete:
            self.out.flush()

    def finish(self) -> None:
        self._done.set()
        self._thread.join()
        self._print_new()


def merge_secrets(spec: dict[str, Any], text: str | None) -> dict[str, Any]:
    """``spec`` (from ``$CHAOSMEM_REPLAY``) with the Secret's real values in place of the masked
    ones. A malformed Secret is a ValueError that never quotes it."""
    if not text:
        return spec
    try:
        values = json.loads(text)
    except ValueError:
        raise ValueError(f"${SECRET_ENV} is not JSON") from None
    if not isinstance(values, dict) or not set(values) <= {"options", "capture_url"}:
        raise ValueError(f"${SECRET_ENV} is not an object of options and capture_url")
    options = values.get("options", {})
    if not isinstance(options, dict) or not set(options) <= _SECRET_OPTIONS:
        raise ValueError(f"${SECRET_ENV}: options may only hold headers and target_url")
    capture_url = values.get("capture_url")
    if capture_url is not None and not isinstance(capture_url, str):
        raise ValueError(f"${SECRET_ENV}: capture_url is not a string")
    merged = {**spec, "options": {**spec["options"], **options}}
    if capture_url is not None:
        merged["capture_url"] = capture_url
    return merged


def _download(url: str, into: Path) -> Path:
    parts = urlsplit(url)
    name = os.path.basename(parts.path) or "capture"
    target = into / name
    request = urllib.request.Request(url)
    if parts.username is not None:  # NB: urllib does not use a URL's user info itself
        host = parts.netloc.rpartition("@")[2]
        request = urllib.request.Request(parts._replace(netloc=host).geturl())
        user = unquote(parts.username) + ":" + unquote(parts.password or "")
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    with urllib.request.urlopen(request, timeout=60) as response, target.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    return target


def main() -> int:
    secret = os.environ.pop(SECRET_ENV, None)  # NB: not inherited by anything started here
    try:
        spec = merge_secrets(json.loads(os.environ["CHAOSMEM_REPLAY"]), secret)
    except ValueError as exc:
        print(f"chaosmem: {exc}", file=sys.stderr)
        return 2
    index = int(os.environ["JOB_COMPLETION_INDEX"])
    shards = int(spec["shards"])
    if not 0 <= index < shards:
        print(f"chaosmem: JOB_COMPLETION_INDEX {index} is not a shard of {shards}", file=sys.stderr)
        return 2
    root = Path(os.environ.get("CHAOSMEM_CAPTURE_DIR", "/capture"))
    work = Path(os.environ.get("CHAOSMEM_WORK_DIR", "/tmp/chaosmem"))
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    options_spec = dict(spec["options"])
    if spec.get("capture_url"):
        files = [str(_download(str(spec["capture_url"]), root))]
    else:
        files = [str(root / name) for name in options_spec["capture"]]
    options_spec["capture"] = files
    options = parse_options(**options_spec)
    start_at = float(spec["start_at"])
    if not math.isfinite(start_at):
        return 2
    compiled = compile_capture(options, cache=work / "cache")
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)  # NB: the engine appends; only this run's lines print
    printer = SecondsPrinter(out / "seconds.jsonl", sys.stdout).start()
    try:
        summary = run_engine(
            options,
            Schedule(options, compiled, shard=index, shards=shards),
            replay_id=str(spec["replay_id"]),
            out_dir=out,
            start_at=start_at,
            detail=True,
        )
    finally:
        printer.finish()
    sys.stdout.write(LOG_SUMMARY + json.dumps(summary, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
