"""One redaction for everything that leaves a process as text: log lines (every sink), error lines, reports.

``redact(text)`` hides, wherever they appear:

- the password of a URL (``scheme://user:PASSWORD@host``), also one holding unencoded ``/ # ? :``
  (everything up to the token's last ``@`` is taken as the password);
- the values of secret query or form parameters (``access_token=``, ``password=``, ``token=``,
  ``api_secret=``, ``request_token=`` and the like);
- bearer credentials (``Bearer <token>``, ``Authorization: token key:secret``) and the dashboard's cookie;
- every value registered with :func:`register_secrets` (the settings' secret values), wherever it appears.

``escape_line(text, limit)`` makes untrusted text one log line: control characters escaped (a newline in a
feed message cannot forge a log line) and the length capped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MAX_LINE_CHARS = 4000  # a log message longer than this is cut (the rest counted), e.g. a 5 MB feed text

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s]*)@")
_SECRET_PARAM = re.compile(
    r"(?P<key>\b(?:access_token|request_token|refresh_token|api_secret|password|passwd|pwd|secret|token|"
    r"strikeflow_token)=)(?P<value>[^&\s#'\";,()]+)", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(?P<key>\b(?:Bearer\s+|Authorization:\s*token\s+))(?P<value>[^\s'\",;]+)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]|\n")

_registered: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values (access tokens, passwords): :func:`redact` hides them wherever they appear.
    Values shorter than 4 characters are not registered (they would mask ordinary text)."""
    _registered.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``***`` (see the module doc)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m['key']}{MASK}", text)
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str | None) -> str:
    """``url`` with its password and secret query parameters replaced by ``***`` (safe for logs and errors)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)[1]
            url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{netloc}"))
    except ValueError:  # not a URL urlsplit can read: the text rules still apply
        pass
    return redact(url)


def escape_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` as one line: control characters as ``\\xNN`` (newlines as ``\\n``), at most ``limit`` characters."""
    text = _CONTROL.sub(lambda m: "\\n" if m.group() == "\n" else f"\\x{ord(m.group()):02x}", text)
    if len(text) > limit:
        text = f"{text[:limit]}... [{len(text) - limit:,} more characters]"
    return text


__all__ = ["MASK", "escape_line", "redact", "redact_url", "register_secrets"]
