"""Redaction: what came from secrets never reaches a report, wherever the journal holds it."""

from __future__ import annotations

from typing import Any

from chaosmem.report.redact import REDACTED, redact, secret_values, unknown_env_values

EXPERIMENT: dict[str, Any] = {
    "title": "t",
    "secrets": {
        "k8s": {"token": "tok-123456", "from_env": {"type": "env", "key": "APP_PASSWORD"}},
        "short": {"pin": "42"},
    },
    "configuration": {
        "db_url": {"type": "env", "key": "DB_URL", "default": "postgres://u:pw-default@db"},
        "plain": "visible-setting",
    },
}


def journal() -> dict[str, Any]:
    return {
        "experiment": EXPERIMENT,
        "status": "completed",
        "run": [
            {
                "activity": {
                    "name": "call",
                    "provider": {"headers": {"Authorization": "Bearer abc"}},
                },
                "output": {"stdout": "got tok-123456 and env-pass-999 and 42 and 420", "status": 0},
            },
        ],
        "extensions": [
            {
                "name": "chaosmem",
                "timeline": [
                    {
                        "t": 1.0,
                        "kind": "sample",
                        "targets": [{"name": "svc-tok-123456", "usage": 42}],
                    },
                    {
                        "t": 2.0,
                        "kind": "mark",
                        "event": "note",
                        "text": "env-pass-999",
                        "api_key": "zzz",
                    },
                ],
            },
        ],
    }


def test_secret_values_come_from_secrets_env_and_env_configuration() -> None:
    env = {"APP_PASSWORD": "env-pass-999", "DB_URL": "postgres://u:pw-live@db"}
    assert secret_values(EXPERIMENT, env) == {
        "tok-123456",
        "env-pass-999",
        "42",
        "postgres://u:pw-default@db",
        "postgres://u:pw-live@db",
    }


def test_redact_reaches_outputs_timelines_and_credential_keys() -> None:
    clean = redact(journal(), environ={"APP_PASSWORD": "env-pass-999"})
    text = repr(clean)
    for secret in ("tok-123456", "env-pass-999", "pw-default", "Bearer abc", "zzz"):
        assert secret not in text
    assert clean["experiment"]["secrets"] == {
        "k8s": {"token": REDACTED, "from_env": REDACTED},
        "short": {"pin": REDACTED},
    }
    assert clean["experiment"]["configuration"]["plain"] == "visible-setting"
    stdout = clean["run"][0]["output"]["stdout"]
    # short values only go where a whole string (or number) equals them
    assert stdout == f"got {REDACTED} and {REDACTED} and 42 and 420"
    timeline = clean["extensions"][0]["timeline"]
    # measurements stay numbers: a usage of 42 bytes is not the PIN
    assert timeline[0]["targets"][0] == {"name": f"svc-{REDACTED}", "usage": 42}
    assert timeline[1]["text"] == REDACTED and timeline[1]["api_key"] == REDACTED
    assert journal()["run"][0]["output"]["stdout"].startswith("got tok-123456")  # a copy


def test_unset_env_secrets_are_named() -> None:
    assert unknown_env_values(EXPERIMENT, {"DB_URL": "x"}) == ["APP_PASSWORD"]
