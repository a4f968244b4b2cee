"""What counts as a secret in what chaosmem returns and writes, and how it is masked.

Journals are 0644 files that CI archives and people paste, so a replay's ``Authorization``
header or a password in its target URL must never reach one. Reports already mask credentials
by key name (:mod:`chaosmem.report.redact` uses the same pattern from here); activities mask
what they return and what they write to the state dir with the helpers below, and keep the
real values only in memory (a background replay worker gets them on its stdin).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "SENSITIVE_KEY", "is_sensitive_header", "redact_headers", "redact_url"]

REDACTED = "[redacted]"
#: A key or header name that names a credential.
SENSITIVE_KEY = re.compile(
    r"(?i)(^|[_\-.])(password|passwd|passphrase|secret|secrets|token|api[_\-]?key|authorization|"
    r"credentials?|private[_\-]?key|client[_\-]?secret|access[_\-]?key)($|[_\-.])"
)
_SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)


def is_sensitive_header(name: str) -> bool:
    return name.lower() in _SENSITIVE_HEADERS or SENSITIVE_KEY.search(name) is not None


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the value of every credential-like header replaced by :data:`REDACTED`."""
    return {k: REDACTED if is_sensitive_header(k) else v for k, v in headers.items()}


def redact_url(url: str) -> str:
    """``url`` with a password in its user info, and credential-like query values, masked."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SENSITIVE_KEY.search(k) for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if SENSITIVE_KEY.search(k) else v) for k, v in pairs], safe="[]"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
