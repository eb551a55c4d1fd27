"""Reading api3 bodies within bounds: memory in flight, credentials before size, parse cost.

The body is the one part of a request that a caller without credentials controls in
full, and a parsed JSON body can take 25 times its size in memory and hold the GIL
while it is built. So, per process:

- every body is counted against one budget of bytes (`max_inflight_bytes`) as its
  bytes arrive, and its parse is counted before it starts; what does not fit gets a
  Fault at once (`Busy`), never a wait. A quarter of the budget is kept for small
  bodies, so large ones cannot crowd out ordinary reads;
- a body past `max_unverified_body_bytes` must begin with credentials the site
  accepts (shotgun_api3 sends `params[0]`, the auth object, first) before more of it is
  kept; a refused body is answered at once and the rest of it is never read by the app
  (and, when it has no credentials at all, the connection is closed). The first refusal
  of a key lets the server drain the body, so a real client reads its Fault; the same
  key sent again from the same address within `REFUSED_TTL` is refused from the head
  with no call to the site and the connection closed, so a resent large body costs the
  cache its first bytes, not the whole body. Before such a close the connection is held
  unread for `refusal_delay` seconds (at most `MAX_HELD` at once), so a sender that
  resends as soon as it is refused resends a few times a minute, not hundreds of times
  a second (each resend would otherwise cost both ends copying megabytes);
- a body is parsed only if its count of JSON values is bounded (`max_json_items`),
  large ones off the event loop, two at a time.

What the cache will not parse or hand to its read engine (too many values, nested past
`max_json_depth`) goes to the site verbatim: these limits protect the cache, they are
not the site's, and a request the site accepts is still answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..protocol import errors, jsoncodec

#: Bodies up to this size are parsed on the event loop; bigger ones in a worker thread.
INLINE_PARSE_BYTES = 256 * 1024
#: Bytes a parsed JSON value may take, at most about (a one-key object: 184 bytes for
#: two counted values; measured with orjson on CPython 3.11), on top of the body's own size.
ITEM_BYTES = 100
#: How much of a large body's beginning is searched for its credentials.
HEAD_BYTES = 64 * 1024
#: Share of the budget only bodies no larger than the unverified limit may use.
SMALL_RESERVE = 0.25
#: Seconds a large body's refused (address, credentials) is refused again from the head
#: (the auth check's own refusal TTL), and how many such pairs are kept at most.
REFUSED_TTL = 30.0
MAX_REFUSED = 10_000
#: Refused connections held unread at once before they are closed; past it, closed at once.
MAX_HELD = 256


class BadRequest(errors.Fault):
    """The request could not be read as an api3 call at all."""


class NoCredentials(BadRequest):
    """A large body that does not begin with credentials: no api3 client sends one, so
    after the Fault the connection is closed and the rest of the body never read (a
    refused key, which a real client may send, gets its Fault and the body is drained)."""

    close_connection = True


class RefusedAgain(errors.AuthenticationFault):
    """A large body with credentials refused moments ago from the same address: the
    Fault again, without asking the site, and the connection closed unread."""

    close_connection = True


class Busy(errors.Fault):
    """The process holds as many request bodies as it may; the caller should retry soon."""

    code = errors.UPSTREAM_UNAVAILABLE


class ByteBudget:
    """Bytes of request bodies (and their parses) held at once in this process.

    Single event loop, so no lock: `take` and `give` never await.
    """

    def __init__(self, limit: int, reserve: float = SMALL_RESERVE) -> None:
        self.limit = max(0, limit)
        self.big_limit = int(self.limit * (1 - reserve))
        self.used = 0
        self.peak = 0
        self.refused = 0

    def take(self, n: int, big: bool) -> bool:
        if self.used + n > (self.big_limit if big else self.limit):
            self.refused += 1
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


@dataclass
class Lease:
    """One request's share of the budget, given back when the request is done."""

    budget: ByteBudget
    held: int = 0

    def take(self, n: int, big: bool) -> bool:
        if not self.budget.take(n, big):
            return False
        self.held += n
        return True

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0


@dataclass
class Parsed:
    """An api3 body as the cache reads it. `verbatim` says why it goes to the site as sent."""

    method: str = ""
    params: list[Any] = field(default_factory=list)
    verbatim: str | None = None


def too_deep(value: Any, limit: int) -> bool:
    """True if lists/dicts nest deeper than `limit` (level by level: no recursion to exhaust)."""
    level = [value] if isinstance(value, (list, dict)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nxt: list[Any] = []
        for v in level:
            nxt += [x for x in (v.values() if isinstance(v, dict) else v) if isinstance(x, (list, dict))]
        level = nxt
    return False


def json_items(body: bytes) -> int:
    """At least as many as the JSON values in `body` (one per container and separator;
    commas inside strings count too): a C-speed bound taken before parsing."""
    return body.count(b"{") + body.count(b"[") + body.count(b",")


def parse_payload(body: bytes, max_depth: int) -> Parsed:
    """An api3 body read, or BadRequest saying what is wrong with it.

    Nesting past `max_depth` (or past what the JSON parser itself reads) is not an error
    here: the body is handed back for the site to judge, unread by the engine.
    """
    try:
        payload = jsoncodec.loads(body, allow_constants=False)
    except RecursionError:
        return Parsed(verbatim="JSON nested deeper than the cache's parser reads")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("Invalid JSON in request body.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("method_name"), str):
        raise BadRequest("Request must be a JSON object with a 'method_name'.")
    params = payload.get("params") or []
    if not isinstance(params, list):
        raise BadRequest("'params' must be a list.")
    out = Parsed(payload["method_name"], params)
    # Nesting can be no deeper than the brackets opened (counted in C): walk only then.
    if body.count(b"[") + body.count(b"{") > max_depth and too_deep(payload, max_depth):
        out.verbatim = f"JSON nested more than {max_depth} levels deep"
    return out


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def head_credentials(head: bytes) -> dict[str, Any] | None:
    """The auth object (`params[0]`) from the beginning of an api3 body, or None.

    Reads only the top-level keys up to `params` and its first element, within `head`,
    so a huge body is judged by its first few hundred bytes.
    """
    text = head.decode("utf-8", "ignore")
    dec = json.JSONDecoder()
    try:
        i = _skip_ws(text, 0)
        if text[i:i + 1] != "{":
            return None
        i += 1
        while True:
            i = _skip_ws(text, i)
            key, i = dec.raw_decode(text, i)
            i = _skip_ws(text, i)
            if not isinstance(key, str) or text[i:i + 1] != ":":
                return None
            i = _skip_ws(text, i + 1)
            if key == "params":
                if text[i:i + 1] != "[":
                    return None
                auth, _ = dec.raw_decode(text, _skip_ws(text, i + 1))
                return auth if isinstance(auth, dict) else None
            _, i = dec.raw_decode(text, i)
            i = _skip_ws(text, i)
            if text[i:i + 1] != ",":
                return None
            i += 1
    except (ValueError, RecursionError, IndexError):
        return None


class Intake:
    """Reads and parses api3 bodies within this process's limits (see the module doc)."""

    def __init__(self, *, max_body_bytes: int, max_inflight_bytes: int, max_unverified_body_bytes: int,
                 max_json_items: int, max_json_depth: int,
                 verify: Callable[[dict[str, Any]], Awaitable[None]], refusal_delay: float = 5.0) -> None:
        self.max_body = max_body_bytes
        self.unverified = max_unverified_body_bytes
        self.max_items = max_json_items
        self.max_depth = max_json_depth
        self.verify = verify
        self.budget = ByteBudget(max_inflight_bytes)
        self._big_parses = asyncio.Semaphore(2)
        self._salt = os.urandom(16)
        self._refused: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> (when, message)
        self.refused_again = 0  # large bodies refused from the head by an earlier verdict
        self.refusal_delay = refusal_delay
        self._held = 0

    def lease(self) -> Lease:
        return Lease(self.budget)

    def _busy(self) -> Busy:
        return Busy(f"sgcache is busy: request bodies in flight have reached its limit of "
                    f"{self.budget.limit} bytes (SGCACHE_MAX_INFLIGHT_BYTES). Try again shortly.")

    def _refusal_key(self, address: str, auth: dict[str, Any]) -> str:
        material = repr(sorted((str(k), repr(v)) for k, v in auth.items())) + "\0" + address
        return hashlib.blake2b(material.encode("utf-8", "surrogatepass"), key=self._salt, digest_size=16).hexdigest()

    def _refused_before(self, key: str) -> str | None:
        hit = self._refused.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= REFUSED_TTL:
            del self._refused[key]
            return None
        return hit[1]

    def _remember_refusal(self, key: str, message: str) -> None:
        self._refused[key] = (time.monotonic(), message)
        self._refused.move_to_end(key)
        while len(self._refused) > MAX_REFUSED:
            self._refused.popitem(last=False)

    async def read(self, request: Request, lease: Lease) -> bytes:
        """The whole body, counted in `lease`; or the Fault that refuses it, as soon as it can.

        A refused body is not read further: the Fault goes out at once, and the server
        (uvicorn) drops the rest of the body as it arrives, without handing it to the app,
        so a client that sends its whole body before reading still gets the Fault.
        """
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        checked = False
        async for chunk in request.stream():
            if not chunk:
                continue
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large()
            if not lease.take(len(chunk), big=size > self.unverified):
                raise self._busy()
            chunks.append(chunk)
            if not checked and size > self.unverified:
                checked = True
                try:
                    await self._check_head(chunks, request.client.host if request.client else "?")
                except errors.Fault as f:
                    if getattr(f, "close_connection", False):
                        chunks.clear()  # nothing of it is kept while the connection is held
                        lease.release()
                        await self._hold()
                    raise
        return b"".join(chunks)

    async def _hold(self) -> None:
        """Keep a connection about to be closed unread for `refusal_delay` seconds (the
        server stops reading it once its buffer is full), unless too many are held."""
        if self.refusal_delay <= 0 or self._held >= MAX_HELD:
            return
        self._held += 1
        try:
            await asyncio.sleep(self.refusal_delay)
        finally:
            self._held -= 1

    def _too_large(self) -> BadRequest:
        return BadRequest(f"Request body too large: the limit is {self.max_body} bytes.")

    async def _check_head(self, chunks: list[bytes], address: str) -> None:
        head = bytearray()
        for c in chunks:
            head += c[:HEAD_BYTES - len(head)]
            if len(head) >= HEAD_BYTES:
                break
        auth = head_credentials(bytes(head))
        if auth is None:
            raise NoCredentials(f"A request body over {self.unverified} bytes must begin with its "
                             "credentials, as shotgun_api3 sends them: "
                             '{"method_name": ..., "params": [{<auth>}, ...]}.')
        key = self._refusal_key(address, auth)
        message = self._refused_before(key)
        if message is not None:
            self.refused_again += 1
            raise RefusedAgain(message)
        try:
            await self.verify(auth)
        except errors.AuthenticationFault as f:
            self._remember_refusal(key, f.message)
            raise

    async def parse(self, body: bytes, lease: Lease) -> Parsed:
        """The body read as an api3 call, its parse counted in `lease`; verbatim when the
        cache will not parse it (more than `max_json_items` values)."""
        items = json_items(body)
        if items > self.max_items:
            return Parsed(verbatim=f"more than {self.max_items} JSON values")
        cost = len(body) + ITEM_BYTES * items
        if lease.held + cost > self.budget.big_limit:  # could never fit, even alone
            return Parsed(verbatim="too large for the cache to parse")
        if not lease.take(cost, big=len(body) > self.unverified):
            raise self._busy()
        if len(body) <= INLINE_PARSE_BYTES:
            return parse_payload(body, self.max_depth)
        async with self._big_parses:  # seconds of CPU for a big batch: off the loop, two at a time
            return await run_in_threadpool(parse_payload, body, self.max_depth)
