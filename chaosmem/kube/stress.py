"""Allocation stress inside a pod's container, through the exec API.

The stress engine (``chaosmem/stress/engine.py``, standard library only) is shipped over the
exec stream: the container runs ``python3 -I -S -c BOOTSTRAP``, the bootstrap reads exactly the
engine's source from stdin and runs it. So the image needs a ``python3`` and nothing else (no
chaosmem, no file copied in). Its pages are charged to the target container's cgroup, exactly
as the service's are.

The same guarantees as locally: each stressor is written to the ledger (kind ``pod-stressor``)
before it starts; it has a deadline of ramp + hold + 30 s of its own; its stdin is the exec
stream, so when the process that started it dies the stream closes, stdin reaches EOF and the
engine ends itself; ``stop_allocation_stress``, the control and ``chaosmem rollback`` end it by
id through another exec. NB: on cgroup v2 nodes the kubelet (1.28+) sets ``memory.oom.group``,
so an OOM kill takes the whole container, the service with the stressor: the container restarts
and the stressor is gone with it (docs/kubernetes.md says what that means for an experiment).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL, WSClient

from chaosmem.errors import ChaosmemError, InvalidArgument
from chaosmem.interrupts import wait_for_all
from chaosmem.kube.client import Api, connect
from chaosmem.ledger import Entry, Ledger, current_run, register_undo
from chaosmem.stress import engine
from chaosmem.stress.inject import GRACE, StressRequest
from chaosmem.units import format_size

__all__ = ["POD_STRESSOR_KIND", "inject_in_pods", "stop_in_pods"]

logger = logging.getLogger("chaostoolkit")

POD_STRESSOR_KIND = "pod-stressor"
MARK = "chaosmem.stress.engine"  # an argv element of every shipped engine: how stop finds it
ENGINE_SOURCE = Path(engine.__file__).read_bytes()
_OOM_EXIT = 137

#: Reads exactly N bytes of engine source from stdin (fd 0, unbuffered: what follows stays for
#: the engine's parent watch), then runs it as a module with the remaining arguments.
BOOTSTRAP = (
    "import os,sys,types\n"
    "n=int(sys.argv[2]);src=b''\n"
    "while len(src)<n:\n"
    " b=os.read(0,n-len(src))\n"
    " if not b:sys.exit(4)\n"
    " src+=b\n"
    "m=types.ModuleType('chaosmem_engine');sys.modules['chaosmem_engine']=m\n"
    "exec(compile(src,'chaosmem/stress/engine.py','exec'),m.__dict__)\n"
    "sys.exit(m.main(sys.argv[3:]))\n"
)

#: Ends the engines of one stressor id in this container: TERM, then KILL after a grace.
STOP = (
    "import json,os,signal,sys,time\n"
    "ident,grace=sys.argv[1],float(sys.argv[2])\n"
    "def ours(p):\n"
    " try:a=open('/proc/%s/cmdline'%p,'rb').read().split(b'\\0')\n"
    " except OSError:return False\n"
    " a=[x.decode('utf-8','replace') for x in a]\n"
    " return '" + MARK + "' in a and any(a[i]=='--id' and a[i+1]==ident for i in range(len(a)-1))\n"
    "pids=[int(p) for p in os.listdir('/proc') if p.isdigit() and ours(p)]\n"
    "end=time.monotonic()+grace;sig=signal.SIGTERM\n"
    "while True:\n"
    " left=[p for p in pids if ours(p)]\n"
    " if not left:break\n"
    " for p in left:\n"
    "  try:os.kill(p,sig)\n"
    "  except OSError:pass\n"
    " time.sleep(0.05)\n"
    " if time.monotonic()>end:sig=signal.SIGKILL\n"
    " if time.monotonic()>end+10:break\n"
    "print(json.dumps({'stopped':pids}))\n"
)

NO_PYTHON = (
    "the container {container!r} of pod {pod} has no python3, which the in-pod stress engine "
    "needs; add a stress sidecar (any image with python3, e.g. python:3.12-slim, sharing the "
    'pod) and target it with "container": "<sidecar>" (its memory is charged to its own '
    "limit, see docs/kubernetes.md)"
)


def _exec(api: Api, namespace: str, pod: str, container: str, argv: list[str]) -> WSClient:
    try:
        client: WSClient = stream(
            api.core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            container=container,
            command=argv,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
    except Exception as exc:  # the client wraps every websocket failure in ApiException(0)
        raise ChaosmemError(
            f"exec into pod {namespace}/{pod} container {container!r} failed: {exc}"
        ) from None
    return client


def _error_status(client: WSClient) -> dict[str, Any] | None:
    raw = client.read_channel(ERROR_CHANNEL)
    if not raw:
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        return {"status": "Failure", "message": raw}
    return status if isinstance(status, dict) else None


def _exit_code(status: dict[str, Any] | None) -> int | None:
    """The exit code from the exec's status channel (0 on Success)."""
    if status is None:
        return None
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                return None
    return None


def _missing_python(status: dict[str, Any] | None) -> bool:
    message = str((status or {}).get("message") or "")
    return "executable file not found" in message or "no such file or directory" in message


@dataclass
class PodStressor:
    """One engine in one pod's container, held through its exec stream."""

    api: Api
    namespace: str
    pod: str
    container: str
    stressor_id: str
    argv: list[str]
    entry: Entry
    ledger: Ledger
    output: list[str] = field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    _client: WSClient | None = None
    _thread: threading.Thread | None = None
    _started: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 30.0) -> None:
        self.started_at = time.monotonic()
        client = _exec(self.api, self.namespace, self.pod, self.container, self.argv)
        self._client = client
        with contextlib.suppress(OSError):  # refused at once (no python3): see the status channel
            client.write_stdin(ENGINE_SOURCE)
        self._thread = threading.Thread(
            target=self._run, name=f"chaosmem-pod-stress-{self.stressor_id}", daemon=True
        )
        self._thread.start()
        # NB: a missing python3 answers at once on the error channel; wait a moment for it.
        self._started.wait(min(timeout, 1.0))
        if self.error:
            raise ChaosmemError(self.error)

    def _run(self) -> None:
        client = self._client
        assert client is not None
        try:
            while client.is_open():
                client.update(timeout=0.5)
                for channel in (STDOUT_CHANNEL, STDERR_CHANNEL):
                    if data := client.read_channel(channel):
                        self.output.append(data)
                if not client.is_open() or ERROR_CHANNEL in client._channels:
                    break
            self._settle(None)
        except Exception as exc:
            # NB: a refused exec (no python3) can close the socket before we finish writing;
            # what the status channel said by then is still the answer.
            self._settle(exc)
        finally:
            self.ended_at = time.monotonic()
            self._started.set()
            client.close()
            try:
                if any(e.id == self.entry.id for e in self.ledger.read().open()):
                    self.ledger.close(self.entry, self.outcome)
            except OSError:
                pass

    def _settle(self, broke: Exception | None) -> None:
        """Read the exit from the status channel (or say why the stream broke)."""
        assert self._client is not None
        status = _error_status(self._client)
        if _missing_python(status):
            self.error = NO_PYTHON.format(
                container=self.container, pod=f"{self.namespace}/{self.pod}"
            )
        elif status is None and broke is not None:
            self.error = f"exec stream of stressor {self.stressor_id} broke: {broke}"
        self.exit_code = _exit_code(status)
        if status is not None and self.exit_code is None and not self.error:
            self.error = (
                f"exec into pod {self.namespace}/{self.pod} container {self.container!r} "
                f"failed: {status.get('message') or status}"
            )

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    @property
    def outcome(self) -> str:
        if self.error:
            return "failed"
        if self.exit_code is None:
            return "running" if self.ended_at is None else "ended"
        if self.exit_code == _OOM_EXIT:
            return "oom-killed"
        return {
            engine.EXIT_DONE: "done",
            engine.EXIT_STOPPED: "stopped",
            engine.EXIT_PARENT_GONE: "parent-gone",
            engine.EXIT_DEADLINE: "deadline",
        }.get(self.exit_code, "failed")

    def result(self) -> dict[str, Any]:
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        last = _last_status("".join(self.output))
        return {
            "id": self.stressor_id,
            "pod": f"{self.namespace}/{self.pod}",
            "container": self.container,
            "outcome": self.outcome,
            "oom_killed": self.exit_code == _OOM_EXIT,
            "exit_code": self.exit_code,
            "seconds": round(end - self.started_at, 3),
            **({"engine": last} if last else {}),
            **({"error": self.error} if self.error else {}),
        }


def _last_status(text: str) -> dict[str, Any] | None:
    """The engine's last JSON line on stdout (what it reached), if any."""
    for line in reversed(text.splitlines()):
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return None


def _argv(stressor_id: str, request: StressRequest, deadline: float | None) -> list[str]:
    spec = request.engine_specs()[0]
    meta = {"run": current_run(), "pod": True}
    options = spec.engine_options(
        stressor_id=stressor_id,
        status=f"/tmp/chaosmem-stress-{stressor_id}.json",
        parent_fd=-1 if request.detach else 0,
        deadline=deadline,
        meta=meta,
    )
    return ["python3", "-I", "-S", "-c", BOOTSTRAP, MARK, str(len(ENGINE_SOURCE)), *options]


_LIVE: dict[str, PodStressor] = {}


def inject_in_pods(target: Any, request: StressRequest, *, directory: Path) -> dict[str, Any]:
    """Start one engine in each of the target's pods (in the named container)."""
    if request.workers != 1:
        raise InvalidArgument("workers", request.workers, "1 for a pod target (one engine per pod)")
    if request.respawn:
        raise InvalidArgument(
            "respawn", True, "false for a pod target (an OOM kill restarts the container)"
        )
    if target.deployment is not None:
        raise InvalidArgument(
            "target",
            target.spec,
            'a pod target for stress ({"type": "pod", "label_selector": ...}): stress runs in pods',
        )
    target.check_changeable()
    ledger = Ledger(directory)
    spec = request.engine_specs()[0]
    window = None if spec.hold is None else spec.ramp_seconds + spec.hold
    deadline = None if window is None else window + GRACE
    group = uuid.uuid4().hex[:12]
    stressors: list[PodStressor] = []
    try:
        for index, pod in enumerate(target.pods):
            name = pod["metadata"]["name"]
            stressor_id = group if len(target.pods) == 1 else f"{group}-{index}"
            entry = ledger.record(
                kind=POD_STRESSOR_KIND,
                target=target.spec,
                undo={
                    "id": stressor_id,
                    "namespace": target.namespace,
                    "pod": name,
                    "uid": pod["metadata"].get("uid"),
                    "container": target.container,
                },
            )
            stressor = PodStressor(
                target.api, target.namespace, name, target.container, stressor_id,
                _argv(stressor_id, request, deadline), entry, ledger,
            )  # fmt: skip
            stressor.start()
            _LIVE[stressor_id] = stressor
            stressors.append(stressor)
        if request.wait:
            wait_for_all(
                stressors,
                stop=lambda s: _stop_one(s.api, s.entry.undo, grace=1.0),
                work="inject_allocation_stress",
            )
    except BaseException:
        for stressor in stressors:
            _stop_one(stressor.api, stressor.entry.undo, grace=1.0)
        raise
    results = [s.result() for s in stressors]
    return {
        "target": target.spec,
        "stressors": results,
        "pods": [r["pod"] for r in results],
        "plan": request.plan(),
        "oom_killed": any(r["oom_killed"] for r in results),
        "summary": f"{len(results)} in-pod stressor(s) of {format_size(request.size)} in "
        f"{target.describe()}: " + ", ".join(r["outcome"] for r in results),
    }


def _stop_one(api: Api, undo: Mapping[str, Any], *, grace: float) -> list[int]:
    """Exec the stop script in the stressor's container; returns the pids it ended."""
    live = _LIVE.get(str(undo["id"]))
    client = _exec(
        api,
        str(undo["namespace"]),
        str(undo["pod"]),
        str(undo["container"]),
        ["python3", "-I", "-S", "-c", STOP, str(undo["id"]), repr(grace)],
    )
    client.run_forever(timeout=grace + 30)
    out = client.read_channel(STDOUT_CHANNEL)
    client.close()
    if live is not None:
        live.join(5.0)
    parsed = _last_status(out) or {}
    return [int(p) for p in parsed.get("stopped", [])]


def stop_in_pods(
    directory: Path, *, target_spec: Mapping[str, Any] | None, configuration: Any, grace: float
) -> list[dict[str, Any]]:
    """End the open pod stressors of this run (of ``target_spec`` only, when given)."""
    ledger = Ledger(directory)
    entries = ledger.read().open(run=current_run(), kind=POD_STRESSOR_KIND)
    if target_spec is not None:
        entries = [e for e in entries if e.target == dict(target_spec)]
    if not entries:
        return []
    from chaosmem.targets.kubernetes import client_settings

    api = connect(client_settings(configuration))
    stopped = []
    for entry in reversed(entries):
        pids = _stop_one(api, entry.undo, grace=grace)
        if any(e.id == entry.id for e in ledger.read().open()):
            ledger.close(entry, "stopped")
        stopped.append({"id": entry.undo["id"], "pod": entry.undo["pod"], "pids": pids})
    return stopped


@register_undo(POD_STRESSOR_KIND)
def _undo_pod_stressor(entry: Entry, configuration: Mapping[str, Any] | None) -> str:
    from chaosmem.kube.client import NotFound
    from chaosmem.targets.kubernetes import client_settings

    api = connect(client_settings(configuration))
    where = f"pod {entry.undo['namespace']}/{entry.undo['pod']}"
    try:
        pod = api.call(
            api.core.read_namespaced_pod,
            entry.undo["pod"],
            entry.undo["namespace"],
            what=f"read {where}",
        )
    except NotFound:
        return f"stressor {entry.undo['id']}: {where} is gone, and the engine with it"
    if entry.undo.get("uid") and pod["metadata"].get("uid") != entry.undo["uid"]:
        return f"stressor {entry.undo['id']}: {where} was replaced, the engine went with it"
    pids = _stop_one(api, entry.undo, grace=1.0)
    if not pids:
        return f"stressor {entry.undo['id']} in {where}: no longer running"
    return f"stressor {entry.undo['id']} in {where}: stopped pids {pids}"
