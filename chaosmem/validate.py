"""Checks for the arguments that are not quantities: flags, counts, names, strings, hosts.

Each returns the value in the type the caller wants, or raises :class:`InvalidArgument`
naming the argument, so activities can validate everything before touching anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from chaosmem.errors import InvalidArgument

__all__ = [
    "check_bool",
    "check_choice",
    "check_env",
    "check_int",
    "check_keys",
    "check_mapping",
    "check_name",
    "check_str",
    "check_url",
    "is_loopback_host",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_bool(value: object, *, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(name, value, "true or false")
    return value


def check_int(
    value: object, *, name: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        # NB: bounded before int(): Python refuses more than 4300 digits with a ValueError
        if isinstance(value, str) and len(value) <= 40 and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise InvalidArgument(name, value, "a whole number")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"from {minimum}" if minimum is not None else ""
        bounds += f" to {maximum}" if maximum is not None else " or more"
        raise InvalidArgument(name, value, f"a whole number {bounds}")
    return value


def check_str(value: object, *, name: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise InvalidArgument(name, value, "a non-empty string")
    return value


def check_name(value: object, *, name: str) -> str:
    """A name that is safe as a single path component (services, runs)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidArgument(
            name,
            value,
            "a name of letters, digits, '.', '_' or '-' (at most 63), not starting with a symbol",
        )
    return value


def check_choice(value: object, *, name: str, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if value not in options:
        raise InvalidArgument(name, value, "one of " + ", ".join(repr(c) for c in options))
    return str(value)


def check_mapping(value: object, *, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(name, value, "an object (a JSON dictionary)")
    return value


def check_keys(value: Mapping[str, Any], allowed: Iterable[str], *, name: str, what: str) -> None:
    """Refuse a key of ``value`` outside ``allowed``, named ``name.key`` (the first, sorted)."""
    keys = sorted(set(allowed))
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise InvalidArgument(
            f"{name}.{unknown[0]}",
            value[unknown[0]],
            f"no such key for {what} (keys: {', '.join(keys)})",
        )


def check_env(value: object, *, name: str) -> dict[str, str]:
    """Environment variables: string keys, values of string, number or bool, turned to strings."""
    if value is None:
        return {}
    mapping = check_mapping(value, name=name)
    env: dict[str, str] = {}
    for key, item in mapping.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise InvalidArgument(f"{name}.{key}", key, "a variable name without '='")
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, str | int | float):
            raise InvalidArgument(f"{name}.{key}", item, "a string or a number")
        env[key] = str(item)
    return env


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(value: object, *, name: str, allow_remote: bool = False) -> str:
    """An http(s) URL; a host outside loopback only when the user said ``allow_remote``.

    Load and stress must never reach a host nobody named, so the default is loopback only.
    """
    text = check_str(value, name=name)
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidArgument(name, value, "an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidArgument(name, value, "a URL with a port from 1 to 65535") from None
    if not allow_remote and not is_loopback_host(parts.hostname):
        raise InvalidArgument(
            name,
            value,
            "a loopback URL (127.0.0.1, ::1, localhost); pass allow_remote=true to name another host",
        )
    return text
