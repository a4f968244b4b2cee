"""Keeping secrets out of reports.

Reports are pasted into PR comments and archived by CI, so nothing that came from a secret may
reach one. Before anything is rendered, the journal is copied with:

- every value under ``experiment["secrets"]`` replaced (the names stay: they say what was used);
- every configuration entry of type ``env`` (or ``secret``) replaced, its default too;
- every value of a key that names a credential (``password``, ``token``, ``api_key``,
  ``authorization`` …) replaced wherever it appears;
- every occurrence of a known secret value — inline secrets, their environment values and env
  configuration values as this process sees them — replaced inside any string of the journal
  (probe outputs echo them: ``stdout: "hello s3cr3t"``).

Values shorter than :data:`MIN_SUBSTRING` characters are only replaced where a whole string equals
them: replacing ``"on"`` inside every word would make the report unreadable and hide nothing.
Secrets the journal never names (a vault read at run time, ``--var-file`` values) cannot be known
here; keep them out of probe outputs, or pass them with ``--redact``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["REDACTED", "redact", "secret_values"]

REDACTED = "[redacted]"
MIN_SUBSTRING = 4
_SENSITIVE_KEY = re.compile(
    r"(?i)(^|[_\-.])(password|passwd|passphrase|secret|secrets|token|api[_\-]?key|authorization|"
    r"credentials?|private[_\-]?key|client[_\-]?secret|access[_\-]?key)($|[_\-.])"
)
_SECRET_CONFIG_TYPES = {"env", "secret"}


def _values(item: Any, environ: Mapping[str, str]) -> Iterable[str]:
    if isinstance(item, Mapping):
        if item.get("type") == "env" and isinstance(item.get("key"), str):
            if item["key"] in environ:
                yield environ[item["key"]]
            if "default" in item:
                yield from _values(item["default"], environ)
            return
        for key, value in item.items():
            if key != "type":
                yield from _values(value, environ)
    elif isinstance(item, list):
        for value in item:
            yield from _values(value, environ)
    elif isinstance(item, str | int | float) and not isinstance(item, bool):
        yield str(item)


def secret_values(
    experiment: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> set[str]:
    """Every secret value this experiment can have put into its journal, as far as it is known."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    secrets = experiment.get("secrets")
    if isinstance(secrets, Mapping):
        found.update(_values(secrets, env))
    configuration = experiment.get("configuration")
    if isinstance(configuration, Mapping):
        for value in configuration.values():
            if isinstance(value, Mapping) and value.get("type") in _SECRET_CONFIG_TYPES:
                found.update(_values(value, env))
    return {value for value in found if value.strip()}


class _Scrubber:
    def __init__(self, values: set[str]) -> None:
        self.exact = values
        long = sorted((v for v in values if len(v) >= MIN_SUBSTRING), key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(v) for v in long)) if long else None

    def text(self, value: str) -> str:
        if value in self.exact:
            return REDACTED
        return self.pattern.sub(REDACTED, value) if self.pattern else value

    def __call__(self, item: Any, *, key: str | None = None) -> Any:
        if key is not None and _SENSITIVE_KEY.search(key) and not isinstance(item, Mapping | list):
            return REDACTED if item is not None else None
        if isinstance(item, str):
            return self.text(item)
        if isinstance(item, Mapping):
            return {k: self(v, key=str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [self(v) for v in item]
        if isinstance(item, int | float) and not isinstance(item, bool) and str(item) in self.exact:
            return REDACTED
        return item


def _mask_experiment(experiment: Mapping[str, Any]) -> dict[str, Any]:
    masked = dict(experiment)
    secrets = experiment.get("secrets")
    if isinstance(secrets, Mapping):
        masked["secrets"] = {
            scope: {k: REDACTED for k in values} if isinstance(values, Mapping) else REDACTED
            for scope, values in secrets.items()
        }
    configuration = experiment.get("configuration")
    if isinstance(configuration, Mapping):
        masked["configuration"] = {
            k: REDACTED if isinstance(v, Mapping) and v.get("type") in _SECRET_CONFIG_TYPES else v
            for k, v in configuration.items()
        }
    return masked


def redact(
    journal: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
) -> dict[str, Any]:
    """A copy of ``journal`` with every known secret replaced by :data:`REDACTED`."""
    experiment = journal.get("experiment")
    experiment = experiment if isinstance(experiment, Mapping) else {}
    values = secret_values(experiment, environ) | {v for v in extra if v}
    copy = dict(journal)
    copy["experiment"] = _mask_experiment(experiment)
    scrubbed: dict[str, Any] = _Scrubber(values)(copy)
    return scrubbed
