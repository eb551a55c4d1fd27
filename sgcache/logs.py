"""Logging setup: plain or JSON lines, with a last-line-of-defence secret scrubber."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

_SECRET_RE = re.compile(
    r'("?(?:script_key|user_password|session_token|auth_token|password|api_key|key)"?\s*[:=]\s*)'
    r'("[^"]*"|\'[^\']*\'|[^\s,}&]+)', re.IGNORECASE)


def scrub(text: str) -> str:
    """Mask values of secret-looking keys in a log message."""
    return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(json_logs: bool = False, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler()
    handler.addFilter(_ScrubFilter())
    handler.setFormatter(JsonFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
