"""Browser sessions: a signed, expiring cookie naming the signed-in login, and CSRF tokens.

The cookie holds no secret of the user's: only their login, when they signed in and a
CSRF token, signed (itsdangerous, HMAC-SHA1 over a key derived per purpose) with a key
generated once per data dir and kept there readable by its owner only, so every
worker process and a restarted server accept the same sessions, and deleting the file
signs everyone out. Forms that change state (sign-in, sign-out) carry a token the page
got from its own cookie; a cross-site form cannot read it.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "sgcache_browse"
#: The pre-sign-in CSRF cookie (double submit: the form's hidden field must match it).
CSRF_COOKIE = "sgcache_browse_csrf"
SECRET_FILE = "browse.secret"
PATH = "/browse"


def load_secret(data_dir: Path) -> bytes:
    """The data dir's signing key, created (mode 0600) on first use; racing workers agree."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker is writing it
            key = path.read_bytes()
            if len(key) >= 32:
                return key
            time.sleep(0.05)
        raise RuntimeError(f"{SECRET_FILE} in the data dir is too short; delete it to make a new one")
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    return path.read_bytes()


@dataclass(frozen=True)
class Session:
    login: str
    issued: float
    csrf: str


class Sessions:
    """Issues and checks the session and CSRF cookies."""

    def __init__(self, secret: bytes, max_age: float) -> None:
        self.max_age = max_age
        self._session = URLSafeTimedSerializer(secret, salt="sgcache.browse.session")
        self._csrf = URLSafeTimedSerializer(secret, salt="sgcache.browse.csrf")

    def read(self, request: Request) -> Session | None:
        """The request's session, if its cookie is ours, unaltered and unexpired."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data: Any = self._session.loads(raw, max_age=self.max_age)
        except BadSignature:  # forged, altered, or expired (SignatureExpired is a BadSignature)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), str) or not isinstance(data.get("c"), str):
            return None
        return Session(data["u"], float(data.get("t", 0)), data["c"])

    def issue(self, login: str) -> str:
        """A new session cookie's value for `login` (fresh CSRF token)."""
        return str(self._session.dumps({"u": login, "t": time.time(), "c": secrets.token_urlsafe(24)}))

    def start(self, response: Response, request: Request, login: str) -> None:
        self._set(response, request, COOKIE, self.issue(login), int(self.max_age))
        response.delete_cookie(CSRF_COOKIE, path=PATH)

    def end(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path=PATH)

    # -- CSRF for the sign-in form (no session yet) -------------------------------------------
    def login_token(self, request: Request) -> tuple[str, str]:
        """(the token the sign-in form carries, its signed cookie value), reusing the
        browser's CSRF cookie while valid; set the cookie with `set_login_cookie`."""
        raw = request.cookies.get(CSRF_COOKIE)
        token = self._csrf_value(raw)
        if token is None or raw is None:
            token = secrets.token_urlsafe(24)
            raw = self._csrf.dumps(token)
        return token, str(raw)

    def set_login_cookie(self, response: Response, request: Request, raw: str) -> None:
        self._set(response, request, CSRF_COOKIE, raw, 3600)

    def login_token_ok(self, request: Request, sent: Any) -> bool:
        token = self._csrf_value(request.cookies.get(CSRF_COOKIE))
        return token is not None and isinstance(sent, str) and hmac.compare_digest(token, sent)

    def _csrf_value(self, raw: str | None) -> str | None:
        if not raw:
            return None
        try:
            v = self._csrf.loads(raw, max_age=3600)
        except BadSignature:
            return None
        return v if isinstance(v, str) else None

    @staticmethod
    def _set(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path=PATH, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https")


def same_origin(request: Request) -> bool:
    """A state-changing form must come from our own pages (browsers send Origin on POST)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None  # no header (old browsers, curl): the token alone decides
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host
