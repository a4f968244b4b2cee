"""The target face both backends share: the backend table, guarded handler loading, undo
handlers that get the run's configuration, and limit changes that say applied/pending/refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chaosmem import rollback as rollback_module
from chaosmem.errors import InvalidArgument
from chaosmem.kube.resize import original_annotation, resize_outcome
from chaosmem.ledger import Entry, Ledger, register_undo
from chaosmem.limits.change import LIMIT_KINDS
from chaosmem.rollback import HANDLER_MODULES, rollback
from chaosmem.targets import BACKENDS, TARGET_TYPES, LimitChange, backend_of
from chaosmem.targets.cgroup import Cgroup
from chaosmem.targets.kubernetes import _check_spec
from tests.kube_double import make_pod

SEEN: list[Any] = []


@register_undo("test-configured")
def _undo_configured(entry: Entry, configuration: Any) -> str:
    SEEN.append(configuration)
    return "ok"


def test_kinds_and_types_derive_from_the_backend_table() -> None:
    assert LIMIT_KINDS == ("cgroup-limit", "pod-limit")
    assert TARGET_TYPES == ("cgroup", "process", "service", "pod", "deployment")
    assert backend_of("pod").name == "kubernetes" and backend_of("service").name == "local"
    for backend in BACKENDS:
        assert set(backend.handler_modules) <= set(HANDLER_MODULES)


def test_undo_handlers_get_the_runs_configuration(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record(kind="test-configured", target={}, undo={})
    SEEN.clear()
    steps = rollback(tmp_path, configuration={"chaosmem_kubernetes": {"KUBERNETES_CONTEXT": "x"}})
    assert [s.ok for s in steps] == [True]
    assert SEEN == [{"chaosmem_kubernetes": {"KUBERNETES_CONTEXT": "x"}}]


def test_one_backends_missing_import_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Handler modules load one by one: a broken one fails only its own entries, in words."""
    monkeypatch.setattr(
        rollback_module, "HANDLER_MODULES", ("chaosmem.no_such_backend", *HANDLER_MODULES)
    )
    monkeypatch.setattr(rollback_module, "_FAILED", {})
    ledger = Ledger(tmp_path)
    ledger.record(kind="test-configured", target={}, undo={})
    with ledger._locked() as fd:  # an entry of a kind whose handler module cannot load
        import os

        line = {"op": "open", "id": "x1", "kind": "ghost-limit", "target": {}, "undo": {},
                "run": None, "at": 1.0, "pid": 1}  # fmt: skip
        os.write(fd, (json.dumps(line) + "\n").encode())
    steps = rollback(tmp_path)
    assert [s.ok for s in steps] == [False, True]
    assert "chaosmem.no_such_backend" in (steps[0].error or "")
    assert "ModuleNotFoundError" in (steps[0].error or "")


def test_local_rollback_works_without_the_kubernetes_client(tmp_path: Path, cgroup: Cgroup) -> None:
    """A Python where the kubernetes backend cannot import (no chaostoolkit-kubernetes): local
    limits still restore, and a pod target says which backend is missing and why."""
    cgroup.set_memory_limit(256 << 20)
    script = f"""
import sys
sys.modules["chaosk8s"] = None  # importing it raises ImportError
from pathlib import Path
from chaosmem.ledger import Ledger
from chaosmem.limits.change import tighten
from chaosmem.rollback import rollback
from chaosmem.targets import resolve_target
target = resolve_target({{"type": "cgroup", "path": "{cgroup.path}"}})
tighten(target, Ledger(Path("{tmp_path}")), limit=64 << 20, fraction=None)
steps = rollback(Path("{tmp_path}"))
print([s.ok for s in steps], target.memory_limit())
try:
    resolve_target({{"type": "pod", "namespace": "shop", "name": "x"}})
except Exception as exc:
    print(exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first == f"[True] {256 << 20}"
    assert "needs the kubernetes backend, which cannot load here" in second
    assert "chaosk8s" in second


def test_a_cgroup_change_is_applied_at_once(cgroup: Cgroup) -> None:
    change = cgroup.set_memory_limit(128 << 20)
    assert isinstance(change, LimitChange) and change.state == "applied"
    assert change.wait(10) is change


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["namespace", "name", "label_selector", "container", "qty", "percent", "mode", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 20000), st.floats(allow_nan=True),
                  st.text(max_size=30), st.lists(st.integers(), max_size=2)),
    ),
    st.sampled_from(["pod", "deployment"]),
)  # fmt: skip
def test_kube_spec_parser_only_accepts_or_names_the_argument(
    spec: dict[str, Any], kind: str
) -> None:
    try:
        checked = _check_spec({"type": kind, **spec}, "target")
    except InvalidArgument as exc:
        assert exc.name == "target" or exc.name.startswith("target.")
        return
    assert checked["type"] == kind and isinstance(checked["namespace"], str)
    assert "/" not in checked["namespace"]
    if kind == "pod":
        assert ("name" in checked) != ("label_selector" in checked)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=100).map(lambda b: b.hex())))
def test_annotation_parser_never_raises(raw: str) -> None:
    parsed = original_annotation({"annotations": {"chaosmem.io/original-limits": raw}})
    assert isinstance(parsed, dict)
    assert all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in parsed.items())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["PodResizePending", "PodResizeInProgress", "Ready"]),
                                     "status": st.sampled_from(["True", "False"]),
                                     "reason": st.sampled_from(["Deferred", "Infeasible", "Error", ""])}), max_size=3),
    st.sampled_from([None, "Proposed", "InProgress", "Deferred", "Infeasible"]),
    st.sampled_from([None, "512Mi", "1Gi", "junk"]),
)  # fmt: skip
def test_resize_outcome_reads_any_status(
    conditions: list[dict[str, str]], legacy: str | None, actual: str | None
) -> None:
    pod = make_pod("p", containers={"orders": "1Gi"})
    pod["status"]["conditions"] = conditions
    if legacy:
        pod["status"]["resize"] = legacy
    pod["status"]["containerStatuses"][0]["resources"] = (
        {"limits": {"memory": actual}} if actual else {}
    )
    outcome = resize_outcome(pod, "orders", "512Mi", restarts_before=0)
    assert outcome.outcome in {"applied", "pending", "deferred", "infeasible", "error"}
    if outcome.outcome == "applied":
        assert actual == "512Mi"


def test_a_local_rollback_never_imports_the_kubernetes_client(tmp_path: Path) -> None:
    """Handler modules load only until every open entry's kind has one: a local rollback (each
    `chaosmem rollback` and restore) is spared the client's import, a minute under qemu TCG."""
    gone = tmp_path / "gone"
    Ledger(tmp_path).record(
        kind="cgroup-limit", target={"type": "cgroup", "path": str(gone)}, undo={"limit": None}
    )
    code = (
        "import sys; from pathlib import Path; from chaosmem.rollback import rollback; "
        "steps = rollback(Path(sys.argv[1])); assert [s.ok for s in steps] == [True], steps; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'chaosk8s')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
