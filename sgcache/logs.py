"""Logging setup: plain or JSON lines, with a last-line-of-defence secret scrubber.

Code never logs credentials (it logs `auth.identity()`), but a message or traceback
can quote what it was given; every finished line is scrubbed before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

#: Names whose values are secrets, as they appear in auth dicts, forms, cookies and URLs.
_SECRET_KEYS = (r"script_key|user_password|session_token|auth_token|session_id|_session_id|"
                r"api_key|password|passwd|secret|token|key")
_SECRET_RE = re.compile(
    r"((?:" + _SECRET_KEYS + r")(?:\\*[\"'])?\s*[:=]\s*)"   # key, maybe quoted (even JSON-escaped)
    r"(\\*\"(?:[^\"\\]|\\[^\"])*\\*\"|'[^']*'|[^\s,;}&\])\"']+)",  # quoted or bare value
    re.IGNORECASE)
#: user:password@ in URLs (database URLs, a site URL with gateway credentials).
_URL_CREDS_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)


#: Every secret key name contains one of these (case-folded; none has an "i", whose
#: case-insensitive matches include non-ASCII letters that do not fold to it).
_SECRET_STEMS = ("key", "pass", "tok", "sess", "secret")


def scrub(text: str) -> str:
    """Mask values of secret-looking keys, and passwords in URLs, in a log line.

    The regexes cost ~15 us a line; a line without a key stem or a URL cannot match them,
    and most lines (one per request) have neither, so they are skipped for those.
    """
    folded = text.casefold()
    if any(stem in folded for stem in _SECRET_STEMS):
        text = _SECRET_RE.sub(lambda m: m.group(1) + "***", text)
    if "://" in text:
        text = _URL_CREDS_RE.sub(lambda m: m.group(1) + "***@", text)
    return text


class _ScrubFilter(logging.Filter):
    """Scrubs the message itself, so every handler (ours or a library's) gets it clean."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string must not lose the line or raise
            msg = f"{record.msg!r} {record.args!r}"
        clean = scrub(msg)
        if clean != msg or record.args:
            record.msg, record.args = clean, ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": scrub(record.getMessage()),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update({k: scrub(v) if isinstance(v, str) else v for k, v in extra.items()})
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return scrub(json.dumps(out, ensure_ascii=False, default=str))


class ScrubbingFormatter(logging.Formatter):
    """The plain formatter, scrubbing the finished line (tracebacks included)."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure(json_logs: bool = False, level: int | str = logging.INFO) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler()
    handler.addFilter(_ScrubFilter())
    handler.setFormatter(JsonFormatter() if json_logs else
                         ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
