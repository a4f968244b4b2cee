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
Numbers in timeline samples are measurements and stay numbers (a usage of 42 bytes is not a
PIN of 42); their strings (target names) are scrubbed like the rest. Secrets the journal never
names (a vault read at run time, ``--var-file`` values) cannot be known here; keep them out of
probe outputs, or pass them with ``--redact-env``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chaosmem.report.journal import Timeline
from chaosmem.secrets import REDACTED, SENSITIVE_KEY

__all__ = ["REDACTED", "redact", "secret_values", "unknown_env_values"]

MIN_SUBSTRING = 4
_SENSITIVE_KEY = SENSITIVE_KEY
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


def _env_keys(item: Any) -> Iterable[str]:
    if isinstance(item, Mapping):
        if item.get("type") == "env" and isinstance(item.get("key"), str):
            yield item["key"]
            return
        for value in item.values():
            yield from _env_keys(value)


def unknown_env_values(
    experiment: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Environment variables that fed secrets at run time but are not set here: their values may
    sit in probe outputs and cannot be recognised. Reports say so instead of staying silent."""
    env = os.environ if environ is None else environ
    keys = list(_env_keys(experiment.get("secrets")))
    configuration = experiment.get("configuration")
    if isinstance(configuration, Mapping):
        keys += [
            k
            for v in configuration.values()
            if isinstance(v, Mapping) and v.get("type") in _SECRET_CONFIG_TYPES
            for k in _env_keys(v)
        ]
    return sorted({k for k in keys if not env.get(k)})


class _Scrubber:
    """Walks parsed JSON (dicts, lists, str, numbers) — by exact type, which is what keeps a
    10,000-sample timeline fast to scrub."""

    def __init__(self, values: set[str]) -> None:
        self.exact = values
        self.numeric = {v for v in values if _looks_numeric(v)}
        self.long = sorted((v for v in values if len(v) >= MIN_SUBSTRING), key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(v) for v in self.long)) if self.long else None
        self.sensitive: dict[str, bool] = {}

    def _is_sensitive(self, key: str) -> bool:
        found = self.sensitive.get(key)
        if found is None:
            found = self.sensitive[key] = bool(_SENSITIVE_KEY.search(key))
        return found

    def text(self, value: str) -> str:
        if value in self.exact:
            return REDACTED
        return self.pattern.sub(REDACTED, value) if self.pattern else value

    def __call__(self, item: Any) -> Any:
        kind = type(item)
        if kind is str:
            return self.text(item)
        if kind is dict:
            copy: dict[str, Any] = {}
            for key, value in item.items():
                if (
                    self._is_sensitive(str(key))
                    and type(value) not in (dict, list)
                    and value is not None
                ):
                    copy[key] = REDACTED
                else:
                    copy[key] = self(value)
            return copy
        if kind is list:
            return [self(value) for value in item]
        if self.numeric and kind in (int, float) and str(item) in self.numeric:
            return REDACTED
        if isinstance(item, Mapping):
            return self(dict(item))
        return item


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


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
    scrub = _Scrubber(values)
    copy = dict(journal)
    copy["experiment"] = _mask_experiment(experiment)
    # NB: timeline samples are chaosmem's own fixed-schema records and by far the bulk of a long
    # journal: their strings are scrubbed in one pass over their JSON text instead of one by one.
    extensions = copy.pop("extensions", None)
    scrubbed: dict[str, Any] = scrub(copy)
    if isinstance(extensions, list):
        scrubbed["extensions"] = [_scrub_extension(scrub, e) for e in extensions]
    elif extensions is not None:
        scrubbed["extensions"] = scrub(extensions)
    return scrubbed


def _text_scrubber(scrub: _Scrubber) -> Callable[[str], str]:
    """Redaction of one timeline record's JSON text."""
    escaped = (
        re.compile(
            "|".join(
                re.escape(json.dumps(v)[1:-1]) for v in sorted(scrub.long, key=len, reverse=True)
            )
        )
        if scrub.long
        else None
    )

    def transform(text: str) -> str:
        if escaped is not None:
            text = escaped.sub(REDACTED, text)
        if '"kind": "sample"' in text or '"kind":"sample"' in text:
            return text
        return json.dumps(scrub(json.loads(text)))

    return transform


def _time_of(record: Any) -> float:
    """A record's time for sorting; records without a usable one (``t: null``) sort first."""
    t = record.get("t") if isinstance(record, dict) else None
    if isinstance(t, int | float) and not isinstance(t, bool) and -1e18 < t < 1e18:
        return float(t)
    return 0.0


def _scrub_extension(scrub: _Scrubber, extension: Any) -> Any:
    if isinstance(extension, dict) and isinstance(extension.get("timeline"), Timeline):
        # NB: a streamed timeline is scrubbed as each record's text is read: a secret's JSON
        # spelling is replaced in the text, and every key naming a credential in the record.
        rest = scrub({k: v for k, v in extension.items() if k != "timeline"})
        return {**rest, "timeline": extension["timeline"].with_transform(_text_scrubber(scrub))}
    if not isinstance(extension, dict) or not isinstance(extension.get("timeline"), list):
        return scrub(extension)
    timeline = extension["timeline"]
    samples = [r for r in timeline if isinstance(r, dict) and r.get("kind") == "sample"]
    others = scrub([r for r in timeline if not (isinstance(r, dict) and r.get("kind") == "sample")])
    if scrub.pattern is not None and samples:
        escaped = re.compile(
            "|".join(
                re.escape(json.dumps(v)[1:-1]) for v in sorted(scrub.long, key=len, reverse=True)
            )
        )
        samples = json.loads(escaped.sub(REDACTED, json.dumps(samples)))
    merged = sorted(samples + others, key=_time_of)
    return {**scrub({k: v for k, v in extension.items() if k != "timeline"}), "timeline": merged}
