"""A game-day plan: YAML -> validated runs, before anything starts.

A plan names experiments to run in order, each with its Chaos Toolkit configuration variables;
a ``grid`` expands one entry into a run per combination (a GOGC x GOMEMLIMIT sweep)::

    name: monday-gameday
    schedule: "0 9 * * 1"          # for --cronjob / --systemd
    workdir: ..                    # where runs start; experiments are relative to it
    on_safeguard: stop             # or continue: what a safeguard's stop does to the rest
    vars: {port: 18941}            # shared by every run
    experiments:
      - name: oom
        experiment: experiments/local-oom.json
      - name: sweep
        experiment: experiments/gogc-sweep.json
        grid: {gogc: [50, 100], gomemlimit: ["off", "400MiB"]}
        timeout: 5m

Everything is checked up front, so a typo in the fourth experiment never surfaces after three
experiments have run: names (one path component), variables (identifiers with scalar values),
paths (relative, inside the plan's ``workdir`` — its folder unless it says otherwise: no ``..``,
no absolute path, no symlink out), the
grid's size and the timeouts. Every error names the field, its value and what was expected.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaosmem.errors import InvalidArgument
from chaosmem.units import parse_duration

__all__ = ["MAX_PLAN_BYTES", "MAX_RUNS", "Plan", "Run", "check_schedule", "load_plan", "parse_plan"]

#: A plan is a page of YAML; anything this large is a mistake (or an alias bomb).
MAX_PLAN_BYTES = 256 * 1024
#: Runs one plan may expand to: a grid of 10 x 10 is already a long day.
MAX_RUNS = 100
MAX_VALUE_CHARS = 4096
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
#: A plan's name ends up in a CronJob's name ("chaosmem-gameday-" + name: at most 52 characters).
_PLAN_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,33}[a-z0-9])?")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CRON_FIELD = re.compile(r"[0-9*/,\-A-Za-z?]+")
_PLAN_KEYS = {"name", "description", "schedule", "on_safeguard", "vars", "experiments", "workdir"}
_PLAN_KEYS |= {"kubernetes"}
_ENTRY_KEYS = {"name", "experiment", "vars", "grid", "timeout"}
_KUBE_KEYS = {"namespace", "image", "service_account", "plan_config_map"}

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Run:
    """One ``chaos run`` of the plan: an experiment file with its variables."""

    index: int
    slug: str  #: file-safe: journal and report names
    entry: str  #: the plan entry it came from
    experiment: Path
    vars: dict[str, Scalar]
    timeout: float

    grid_keys: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The entry's name, and for a grid run the values that set it apart."""
        grid = " ".join(f"{k}={self.vars[k]}" for k in self.grid_keys)
        return f"{self.entry} {grid}".strip()


@dataclass(frozen=True)
class Plan:
    name: str
    source: Path
    workdir: Path
    runs: list[Run]
    schedule: str | None = None
    on_safeguard: str = "stop"
    description: str = ""
    kubernetes: dict[str, str] = field(default_factory=dict)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice (YAML keeps the last one silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _name(
    value: object, field_name: str, *, pattern: re.Pattern[str] = _NAME, most: int = 40
) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidArgument(
            field_name,
            value,
            f"a name of lowercase letters, digits and '-' (at most {most}, no leading or trailing '-')",
        )
    return value


def _scalar(value: object, field_name: str) -> Scalar:
    if isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            raise InvalidArgument(
                field_name, value[:40] + "…", f"a string of at most {MAX_VALUE_CHARS} characters"
            )
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            raise InvalidArgument(field_name, value, "a number that fits in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(field_name, value, "a finite number")
        return value
    raise InvalidArgument(
        field_name, value, "a string, number or true/false (not a list or object)"
    )


def _vars(value: object, field_name: str) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(field_name, value, "an object of variable: value")
    out: dict[str, Scalar] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _VAR.fullmatch(key):
            raise InvalidArgument(
                f"{field_name} key",
                key,
                "a variable name (letters, digits, '_'; not a digit first)",
            )
        out[key] = _scalar(item, f"{field_name}.{key}")
    return out


def _grid(value: object, field_name: str) -> dict[str, list[Scalar]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise InvalidArgument(field_name, value, "an object of variable: [values, ...]")
    out: dict[str, list[Scalar]] = {}
    for key, items in value.items():
        if not isinstance(key, str) or not _VAR.fullmatch(key):
            raise InvalidArgument(f"{field_name} key", key, "a variable name")
        if not isinstance(items, list) or not items:
            raise InvalidArgument(f"{field_name}.{key}", items, "a non-empty list of values")
        values = [_scalar(v, f"{field_name}.{key}[{i}]") for i, v in enumerate(items)]
        if len(set(map(repr, values))) != len(values):
            raise InvalidArgument(f"{field_name}.{key}", items, "a list without repeated values")
        out[key] = values
    return out


def _inside(workdir: Path, value: object, field_name: str) -> Path:
    """A relative path that stays inside ``workdir`` once symlinks are resolved, and exists."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise InvalidArgument(field_name, value, "a relative path to an experiment file")
    raw = Path(value)
    if raw.is_absolute() or ".." in raw.parts:
        raise InvalidArgument(
            field_name,
            value,
            f"a path inside the plan's directory {workdir} (no '..', not absolute)",
        )
    path = workdir / raw
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidArgument(field_name, value, f"an existing file under {workdir}") from None
    if not resolved.is_relative_to(workdir.resolve()):
        raise InvalidArgument(field_name, value, f"a file inside {workdir} (it links outside)")
    if not resolved.is_file():
        raise InvalidArgument(field_name, value, "a file, not a directory")
    if resolved.suffix not in {".json", ".yaml", ".yml"}:
        raise InvalidArgument(field_name, value, "a Chaos Toolkit experiment (.json, .yaml)")
    return path


def check_schedule(value: object) -> str | None:
    """A cron expression of five fields (``"0 9 * * 1"``), normalised; None stays None."""
    if value is None:
        return None
    fields = value.split() if isinstance(value, str) else []
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        raise InvalidArgument("schedule", value, "a cron expression of 5 fields, e.g. '0 9 * * 1'")
    return " ".join(fields)


def _kubernetes(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument("kubernetes", value, "an object (namespace, image, ...)")
    unknown = set(value) - _KUBE_KEYS
    if unknown:
        raise InvalidArgument("kubernetes", sorted(unknown), f"only {sorted(_KUBE_KEYS)}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str) or not item.strip() or len(item) > 253 or "\n" in item:
            raise InvalidArgument(f"kubernetes.{key}", item, "a one-line string")
        out[key] = item
    for key in ("namespace", "service_account", "plan_config_map"):
        if key in out and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", out[key]):
            raise InvalidArgument(f"kubernetes.{key}", out[key], "a Kubernetes DNS label")
    return out


def _slug(entry: str, index: int, count: int) -> str:
    return entry if count == 1 else f"{entry}-{index + 1:02d}"


def parse_plan(data: object, *, source: Path) -> Plan:
    """Validate a loaded plan and expand it into runs (paths relative to ``source``'s folder)."""
    if not isinstance(data, Mapping):
        raise InvalidArgument("plan", type(data).__name__, "a YAML object with 'experiments'")
    unknown = set(data) - _PLAN_KEYS
    if unknown:
        raise InvalidArgument(
            "plan", sorted(map(str, unknown)), f"only the keys {sorted(_PLAN_KEYS)}"
        )
    base = source.parent.absolute()
    workdir = base
    if data.get("workdir") is not None:
        # NB: the one path that may leave the plan's folder ("workdir: .." for a plan kept in
        # experiments/): it is where the runs start, and every experiment must lie inside it.
        raw = data["workdir"]
        if not isinstance(raw, str) or not raw.strip() or "\x00" in raw:
            raise InvalidArgument("workdir", raw, "a folder, relative to the plan's folder")
        workdir = Path(os.path.normpath(base / raw))
        if not workdir.is_dir():
            raise InvalidArgument("workdir", raw, f"an existing folder ({workdir} is not one)")
    name = _name(data.get("name"), "name", pattern=_PLAN_NAME, most=35)
    on_safeguard = data.get("on_safeguard", "stop")
    if on_safeguard not in ("stop", "continue"):
        raise InvalidArgument("on_safeguard", on_safeguard, "'stop' or 'continue'")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_VALUE_CHARS:
        raise InvalidArgument("description", description, "a string")
    shared = _vars(data.get("vars"), "vars")
    entries = data.get("experiments")
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("experiments", entries, "a non-empty list of experiments")
    runs: list[Run] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        where = f"experiments[{position}]"
        if not isinstance(entry, Mapping):
            raise InvalidArgument(where, entry, "an object with 'name' and 'experiment'")
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise InvalidArgument(where, sorted(map(str, unknown)), f"only {sorted(_ENTRY_KEYS)}")
        entry_name = _name(entry.get("name"), f"{where}.name")
        if entry_name in seen:
            raise InvalidArgument(f"{where}.name", entry_name, "a name not used by another entry")
        seen.add(entry_name)
        path = _inside(workdir, entry.get("experiment"), f"{where}.experiment")
        timeout = parse_duration(entry.get("timeout", "15m"), name=f"{where}.timeout", minimum=1.0)
        if timeout > 24 * 3600:
            raise InvalidArgument(f"{where}.timeout", entry.get("timeout"), "at most 24h")
        own = _vars(entry.get("vars"), f"{where}.vars")
        grid = _grid(entry.get("grid"), f"{where}.grid")
        combos = list(itertools.product(*grid.values())) if grid else [()]
        if len(runs) + len(combos) > MAX_RUNS:
            raise InvalidArgument(
                f"{where}.grid", f"{len(combos)} combinations", f"at most {MAX_RUNS} runs a plan"
            )
        for index, combo in enumerate(combos):
            values = {**shared, **own, **dict(zip(grid, combo, strict=True))}
            runs.append(
                Run(
                    index=len(runs),
                    slug=_slug(entry_name, index, len(combos)),
                    entry=entry_name,
                    experiment=path,
                    vars=values,
                    timeout=timeout,
                    grid_keys=tuple(grid),
                )
            )
    return Plan(
        name=name,
        source=source.absolute(),
        workdir=workdir,
        runs=runs,
        schedule=check_schedule(data.get("schedule")),
        on_safeguard=str(on_safeguard),
        description=description,
        kubernetes=_kubernetes(data.get("kubernetes")),
    )


def load_plan(path: str | Path) -> Plan:
    """Read and validate the plan file at ``path``."""
    source = Path(path)
    try:
        with source.open("rb") as handle:
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument("PLAN", str(path), f"a readable YAML file ({exc.strerror})") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise InvalidArgument("PLAN", str(path), f"a plan of at most {MAX_PLAN_BYTES} bytes")
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise InvalidArgument("PLAN", str(path), "UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise InvalidArgument("PLAN", str(path), f"valid YAML ({exc})".replace("\n", " ")) from None
    return parse_plan(data, source=source)
