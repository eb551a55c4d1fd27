"""`/browse`: a read-only web view of the cache, for people, when the site is slow or down.

Pages are rendered on the server (Jinja2, a stylesheet, no script) from what the cache
holds: the entity types, a type's table (its filters, sorts and paging are an api3 `read`
built by `query.py` and answered by the read engine, under the permission policy the
api3 reads use), an entity with its links and the entities linking to it, and its
thumbnail from the local copies (`serve/thumbnails.py`). People sign in with their site
login and password, checked by the same `AuthVerifier` as api3 callers (TTL, outage
grace, allow-lists); the session is a signed cookie (`session.py`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote, urlencode

from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ...protocol import errors
from ...protocol.values import parse_datetime
from ...read.names import name_field
from ...read.passthrough import Passthrough
from ...runtime import CacheService
from ...upstream import UpstreamUnavailable
from ..auth import AuthVerifier
from ..permissions import Grant, Permissions
from ..status import Monitor
from ..thumbnails import ThumbnailFetcher, ThumbnailStore, image_types
from . import query as q
from .session import Session, Sessions, load_secret, same_origin

log = logging.getLogger("sgcache.browse")

HERE = Path(__file__).parent
#: Back-references listed per (type, field) on an entity's page; more are a link away.
BACKREF_ROWS = 10
#: Types never listed as back-references (every change links to its entity).
NO_BACKREFS = frozenset({"EventLogEntry"})
#: Seconds a signed-in user's standing (allow-lists, active in the cache) is reused.
USER_TTL = 5.0


class Offline(Exception):
    """What the browser cannot show from the cache, said plainly to the person."""


@dataclass
class User:
    session: Session
    grant: Grant

    @property
    def login(self) -> str:
        return self.session.login


def _offline_reason(p: Passthrough, grant: Grant) -> str:
    if grant.rules.policy == "passthrough":
        group = grant.caller.group if grant.caller and grant.caller.group else "no known group"
        return (f"Your permission group ({group}) is answered by the site only: "
                "this browser cannot show it from the cache.")
    if p.reason.startswith("permission:"):
        return ("Your permission group's rules for this cannot be applied offline: the site has to show it "
                f"({p.reason[len('permission:'):].strip()}).")
    return f"The cache cannot show this offline ({p.reason})."


class Browser:
    """The /browse routes and the thumbnail worker of one server process."""

    def __init__(self, service: CacheService, monitor: Monitor, verifier: AuthVerifier,
                 permissions: Permissions) -> None:
        self.service = service
        self.monitor = monitor
        self.verifier = verifier
        self.permissions = permissions
        config = service.config
        data_dir = Path(config.data_dir)
        self.sessions = Sessions(load_secret(data_dir), max_age=config.browse_session_hours * 3600)
        self.thumbs = ThumbnailStore(data_dir / "thumbnails", config.thumbnail_cache_mb * 1_000_000) \
            if config.thumbnail_cache_mb > 0 else None
        # one fetcher per data dir (the worker processes of a host share its copies)
        self.fetcher = ThumbnailFetcher(service, self.thumbs, interval=config.thumbnail_interval,
                                        hosts=config.thumbnail_hosts) if self.thumbs else None
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.globals.update(cell=self.cell, type_label=self.type_label, field_label=self.field_label)
        self._users: dict[str, tuple[float, bool]] = {}
        self._event_times: dict[int, str | None] = {}

    # -- lifecycle and routes -------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        if self.fetcher is None:
            yield
            return
        async with self.fetcher.running():
            yield

    def routes(self) -> list[Any]:
        return [
            Route("/browse", self.types_page, methods=["GET"]),
            Route("/browse/", self.types_page, methods=["GET"]),
            Route("/browse/login", self.login_page, methods=["GET"]),
            Route("/browse/login", self.login, methods=["POST"]),
            Route("/browse/logout", self.logout, methods=["POST"]),
            Mount("/browse/static", StaticFiles(directory=str(HERE / "static")), name="browse-static"),
            Route("/browse/thumb/{etype}/{eid:int}", self.thumbnail, methods=["GET"]),
            Route("/browse/{etype}/{eid:int}", self.entity_page, methods=["GET"]),
            Route("/browse/{etype}", self.type_page, methods=["GET"]),
            Route("/browse/{rest:path}", self.not_found, methods=["GET", "POST"]),  # never passed to the site
        ]

    async def not_found(self, request: Request) -> Response:
        return Response("not found\n", status_code=404, media_type="text/plain")

    # -- vocabulary ---------------------------------------------------------------------------
    def type_label(self, etype: str) -> str:
        ent = self.service.store.schema.entities.get(etype)
        return (ent.display_name if ent else "") or etype

    def field_label(self, etype: str, fname: str) -> str:
        fs = self.service.store.schema.get_field(etype, fname)
        return (fs.display_name if fs else "") or fname

    def _visible_type(self, user: User, etype: str) -> bool:
        return etype in self.service.store and etype not in user.grant.rules.hidden_types

    def cell(self, value: Any, user: User | None = None) -> Markup:
        """A field's value as the page shows it: links as links, lists as lists."""
        if value is None or value == [] or value == "":
            return Markup("")
        if isinstance(value, bool):
            return Markup("✓") if value else Markup("✗")
        if isinstance(value, dict) and "type" in value and "id" in value:
            name = value.get("name")
            text = escape(name if name not in (None, "") else f"{value['type']} {value['id']}")
            if user is not None and self._visible_type(user, str(value["type"])):
                return Markup(f'<a href="/browse/{quote(str(value["type"]))}/{int(value["id"])}">{text}</a>')
            return text
        if isinstance(value, dict) and isinstance(value.get("url"), str):
            label = escape(value.get("name") or value["url"])
            if value["url"].startswith(("http://", "https://")):
                return Markup(f'<a href="{escape(value["url"])}" rel="noreferrer">{label}</a>')
            return label
        if isinstance(value, list):
            return Markup(", ").join(self.cell(v, user) for v in value)
        if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
            return escape(value[:16].replace("T", " ") + (" UTC" if value.endswith("Z") else ""))
        return escape(str(value))

    # -- who is asking ------------------------------------------------------------------------
    async def _user(self, request: Request) -> User | Response:
        """The signed-in user, or the response that sends them to sign in."""
        session = self.sessions.read(request)
        if session is None or not await self._still_allowed(session.login):
            nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            resp = RedirectResponse("/browse/login?" + urlencode({"next": nxt}), status_code=303)
            if session is not None:
                self.sessions.end(resp)
            return resp
        auth = {"user_login": session.login}
        grant = self.permissions.cached(auth) or await run_in_threadpool(self.permissions.grant, auth)
        return User(session, grant)

    async def _still_allowed(self, login: str) -> bool:
        """The allow-lists as they are now, and the user still active in the cache (a user
        disabled on the site loses their session as soon as the sync sees it)."""
        if (self.verifier.allow_scripts or self.verifier.allow_logins) and login not in self.verifier.allow_logins:
            return False
        hit = self._users.get(login)
        if hit is not None and time.monotonic() - hit[0] < USER_TTL:
            return hit[1]
        ok = await run_in_threadpool(self._active_in_cache, login)
        if len(self._users) > 10_000:
            self._users.clear()
        self._users[login] = (time.monotonic(), ok)
        return ok

    def _active_in_cache(self, login: str) -> bool:
        store = self.service.store
        if "HumanUser" not in store or "login" not in store["HumanUser"].fields:
            return True  # nothing to check against: the sign-in's verification stands
        status = "sg_status_list" in store["HumanUser"].fields
        try:
            res = self._engine_read({"type": "HumanUser", "return_fields": ["sg_status_list"] if status else [],
                                     "filters": _where("login", "is", login),
                                     "paging": {"entities_per_page": 2, "current_page": 1}})
        except Passthrough:
            return True
        ents = res["entities"]
        return len(ents) == 1 and (not status or ents[0].get("sg_status_list") != "dis")

    # -- reading -----------------------------------------------------------------------------
    def _engine_read(self, params: dict[str, Any]) -> dict[str, Any]:
        gate = getattr(self.service, "read_gate", None)
        if gate is not None:  # types being rebuilt or not primed
            gate(params)
        with self.service.store.engine.connect() as conn:
            return self.service.reader.read(conn, params)

    def _read(self, user: User, params: dict[str, Any]) -> dict[str, Any]:
        """An api3 read as this user may see it (blocking); Passthrough if not offline."""
        if user.grant.full and not self.permissions.quarantined:  # else `answer` checks the group
            return self._engine_read(params)
        return self.permissions.answer(self.service, user.grant, "read", params)

    async def read(self, user: User, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await run_in_threadpool(self._read, user, params)
        except Passthrough as p:
            raise Offline(_offline_reason(p, user.grant)) from None

    # -- pages --------------------------------------------------------------------------------
    def _banner(self) -> dict[str, Any]:
        st = self.monitor.state
        down = self.service.upstream.site_down or (bool(st.at) and not st.site_ok)
        last = st.last_event_id
        if not st.at:
            with self.service.store.engine.connect() as conn:
                last = self.service.store.get_state(conn, "last_event_id")
        when = self._event_time(last) if isinstance(last, int) else None
        parsed = parse_datetime(when)
        return {"site": self.service.config.public_shotgun_url, "site_down": down, "last_event_id": last,
                "last_event_at": when, "lag_seconds": st.lag_seconds,
                "age": _ago(time.time() - parsed.timestamp()) if parsed else None}

    def _event_time(self, event_id: int) -> str | None:
        if event_id in self._event_times:
            return self._event_times[event_id]
        when = None
        if "EventLogEntry" in self.service.store and "created_at" in self.service.store["EventLogEntry"].fields:
            try:
                ents = self._engine_read({"type": "EventLogEntry", "return_fields": ["created_at"],
                                          "filters": _where("id", "is", event_id)})["entities"]
                when = ents[0]["created_at"] if ents else None
            except Passthrough:
                pass
        if len(self._event_times) > 100:
            self._event_times.clear()
        self._event_times[event_id] = when
        return when

    async def render(self, request: Request, name: str, user: User | None, status_code: int = 200,
                     **ctx: Any) -> Response:
        banner = await run_in_threadpool(self._banner)
        resp = self.templates.TemplateResponse(
            request, name, {"user": user, "banner": banner, **ctx}, status_code=status_code,
            headers={"cache-control": "no-store", "x-frame-options": "DENY",
                     "content-security-policy": "default-src 'self'; style-src 'self'; img-src 'self'; "
                                                "form-action 'self'; frame-ancestors 'none'"})
        return resp

    async def login_page(self, request: Request, error: str = "", status_code: int = 200,
                         login: str = "") -> Response:
        nxt = _safe_next(request.query_params.get("next") or "")
        token, raw = self.sessions.login_token(request)
        resp = await self.render(request, "login.html", None, status_code=status_code, error=error, next=nxt,
                                 login=login, csrf=token)
        self.sessions.set_login_cookie(resp, request, raw)
        return resp

    async def login(self, request: Request) -> Response:
        form = await request.form()
        login, password = str(form.get("login") or "").strip(), str(form.get("password") or "")
        if not same_origin(request) or not self.sessions.login_token_ok(request, form.get("csrf")):
            return await self.login_page(request, "The sign-in form expired; please try again.", 400, login)
        nxt = _safe_next(str(form.get("next") or ""))
        if not login or not password:
            return await self.login_page(request, "Enter your site login and password.", 400, login)
        try:
            await self.verifier.check({"user_login": login, "user_password": password}, "HumanUser")
        except errors.AuthenticationFault:
            log.info("browser sign-in refused for %.100s", login)
            return await self.login_page(request, "The site did not accept this login and password "
                                                  "(or this user may not use the cache).", 401, login)
        except UpstreamUnavailable:
            return await self.login_page(request, "The site cannot be reached to check your password, and you "
                                                  "have not signed in recently enough to be let in without it.",
                                         503, login)
        except errors.Fault:  # the site knew these credentials and refused something else
            pass
        self._users.pop(login, None)
        if not await self._still_allowed(login):
            return await self.login_page(request, "This user is not active in the cache.", 403, login)
        resp = RedirectResponse(nxt or "/browse", status_code=303)
        self.sessions.start(resp, request, login)
        log.info("browser sign-in: %.100s", login)
        return resp

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        session = self.sessions.read(request)
        resp = RedirectResponse("/browse/login", status_code=303)
        if session is not None and same_origin(request) and isinstance(form.get("csrf"), str) \
                and form.get("csrf") == session.csrf:
            self.sessions.end(resp)
            return resp
        if session is None:
            return resp
        return Response("sign-out refused: the form did not come from this page\n", status_code=400,
                        media_type="text/plain")

    async def types_page(self, request: Request) -> Response:
        user = await self._user(request)
        if isinstance(user, Response):
            return user
        rows = await run_in_threadpool(self._type_counts, user)
        return await self.render(request, "types.html", user, rows=rows)

    def _type_counts(self, user: User) -> list[dict[str, Any]]:
        out = []
        for etype in sorted(self.service.store.entities, key=lambda t: self.type_label(t).lower()):
            if etype in user.grant.rules.hidden_types:
                continue
            row: dict[str, Any] = {"type": etype, "label": self.type_label(etype), "count": None, "why": ""}
            params = {"type": etype, "return_fields": [], "filters": [],
                      "paging": {"entities_per_page": 1, "current_page": 1}, "return_paging_info": True}
            try:
                sampled = self.monitor.state.rows.get(etype) if user.grant.full else None
                if sampled is not None:  # the status sampler's count (at most ~30 s old): no table scans
                    gate = getattr(self.service, "read_gate", None)
                    if gate is not None:
                        gate(params)
                    row["count"] = sampled.get("active")
                else:
                    row["count"] = self._read(user, params)["paging_info"].get("entity_count")
            except Passthrough as p:
                row["why"] = _offline_reason(p, user.grant)
            out.append(row)
        return out

    async def type_page(self, request: Request) -> Response:
        user = await self._user(request)
        if isinstance(user, Response):
            return user
        etype = request.path_params["etype"]
        if not self._visible_type(user, etype):
            return await self.render(request, "message.html", user, status_code=404,
                                     title="Not cached", message=f"{etype} is not an entity type the cache holds.")
        table = self.service.store[etype]
        tq = q.parse_type_query(table, etype, request.query_params, request.query_params.getlist)
        params = q.read_params(table, etype, tq)
        entities: list[dict[str, Any]] = []
        total = 0
        offline = ""
        if not tq.errors:
            try:
                try:
                    res = await self.read(user, params)
                except Offline:
                    plain = self._without_links(user, table, tq.columns)
                    if plain is None:
                        raise
                    # a restricted group: links to what its rules cannot place stay on the site
                    res = await self.read(user, {**params, "return_fields": plain})
                    offline = "Links are not shown: your permission group's rules for them cannot be applied offline."
                    tq.columns = plain
                entities, total = res["entities"], res["paging_info"].get("entity_count", 0)
            except Offline as e:
                offline = str(e)
        fields = sorted(((f, self.field_label(etype, f)) for f in table.fields
                         if f"{etype}.{f}" not in user.grant.rules.hidden_fields), key=lambda x: x[1].lower())
        filterable = [(f, label) for f, label in fields if q.relations_for(table, f)]
        pages = max(1, -(-total // q.PER_PAGE))
        thumbs: set[int] = set()
        if self.thumbs is not None and entities and any(t == etype for t, _ in image_types(self.service)):
            thumbs = await run_in_threadpool(self.thumbs.have, etype, [e["id"] for e in entities])
        return await self.render(
            request, "type.html", user, etype=etype, tq=tq, total=total, pages=pages, offline=offline,
            sortable={f for f in tq.columns if q.sortable(table, f)}, name_field=name_field(table.entity, etype),
            rows=self._rows(user, etype, tq.columns, entities, thumbs, name_field(table.entity, etype)),
            filter_rows=[self._filter_row(filterable, f) for f in [*tq.filters, None]],
            column_boxes=_boxes(fields, tq.columns))

    def _rows(self, user: User, etype: str, columns: list[str], entities: list[dict[str, Any]], thumbs: set[int],
              nf: str | None) -> Markup:
        """The table's body, built here rather than in the template: a page is 50 rows of
        several cells, and per-cell template calls were most of its render time."""
        out = []
        base = f"/browse/{quote(etype)}/"
        for e in entities:
            href = f"{base}{int(e['id'])}"
            mark = ' <span class="has-thumb" title="thumbnail kept">▣</span>' if e["id"] in thumbs else ""
            cells = [f'<tr><td class="id"><a href="{href}">{int(e["id"])}</a>{mark}</td>']
            for c in columns:
                v = self.cell(e.get(c), user)
                if c == nf:
                    v = Markup(f'<a href="{href}">{v or int(e["id"])}</a>')
                cells.append(f"<td>{v}</td>")
            cells.append("</tr>\n")
            out.append("".join(cells))
        return Markup("".join(out))

    @staticmethod
    def _filter_row(filterable: list[tuple[str, str]], f: q.Filter | None) -> Markup:
        fields = "".join(f'<option value="{escape(n)}"{" selected" if f and f.field == n else ""}>{escape(label)}</option>'
                         for n, label in filterable)
        rels = "".join(f'<option value="{r}"{" selected" if f and f.relation == r else ""}>{label}</option>'
                       for r, label in q.LABELS.items())
        return Markup(f'<div class="filter"><select name="f" aria-label="Field"><option value="">(field)</option>'
                      f'{fields}</select><select name="op" aria-label="Relation">{rels}</select>'
                      f'<input name="v" aria-label="Value" value="{escape(f.text) if f else ""}"></div>')

    async def entity_page(self, request: Request) -> Response:
        user = await self._user(request)
        if isinstance(user, Response):
            return user
        etype, eid = request.path_params["etype"], int(request.path_params["eid"])
        if not self._visible_type(user, etype):
            return await self.render(request, "message.html", user, status_code=404,
                                     title="Not cached", message=f"{etype} is not an entity type the cache holds.")
        table = self.service.store[etype]
        hidden = user.grant.rules.hidden_fields
        fields = [f for f in table.fields if f"{etype}.{f}" not in hidden]
        note = ""
        try:
            try:
                res = await self.read(user, {"type": etype, "return_fields": fields,
                                             "filters": _where("id", "is", eid)})
            except Offline:
                plain = self._without_links(user, table, fields)
                if plain is None:
                    raise
                res = await self.read(user, {"type": etype, "return_fields": plain,
                                             "filters": _where("id", "is", eid)})
                note = "Links are not shown: your permission group's rules for them cannot be applied offline."
                fields = plain
        except Offline as e:
            return await self.render(request, "message.html", user, title=f"{self.type_label(etype)} {eid}",
                                     message=str(e), site_link=self._site_link(etype, eid))
        if not res["entities"]:
            return await self.render(request, "message.html", user, status_code=404,
                                     title=f"{self.type_label(etype)} {eid}",
                                     message="Not in the cache (or not visible to you).",
                                     site_link=self._site_link(etype, eid))
        ent = res["entities"][0]
        nf = name_field(table.entity, etype)
        order = sorted(fields, key=lambda f: (f != nf, self.field_label(etype, f).lower()))
        backrefs = await run_in_threadpool(self._backrefs, user, etype, eid)
        thumb = None
        if self.thumbs is not None:
            got = await run_in_threadpool(self.thumbs.get, etype, eid, "image", False)
            thumb = f"/browse/thumb/{quote(etype)}/{eid}" if got else None
        title = ent.get(nf) if nf else None
        return await self.render(request, "entity.html", user, etype=etype, eid=eid, ent=ent, order=order,
                                 title=title or f"{self.type_label(etype)} {eid}", backrefs=backrefs,
                                 thumb=thumb, site_link=self._site_link(etype, eid), note=note,
                                 has_image=any(t == etype for t, _ in image_types(self.service)))

    @staticmethod
    def _without_links(user: User, table: Any, fields: list[str]) -> list[str] | None:
        """For a restricted user, the fields minus links (None if that changes nothing)."""
        if user.grant.full:
            return None
        plain = [f for f in fields if table.fields[f].fs.data_type not in ("entity", "multi_entity", "addressing")]
        return plain if len(plain) < len(fields) else None

    def _site_link(self, etype: str, eid: int) -> str:
        """The same record on the site (no credentials: the public form of its URL)."""
        return f"{self.service.config.public_shotgun_url.rstrip('/')}/detail/{quote(etype)}/{eid}"

    def _backrefs(self, user: User, etype: str, eid: int) -> list[dict[str, Any]]:
        """Entities whose link fields point at this one, a few per (type, field)."""
        store = self.service.store
        out = []
        me = {"type": etype, "id": eid}
        for other in sorted(store.entities, key=lambda t: self.type_label(t).lower()):
            if other in NO_BACKREFS or not self._visible_type(user, other):
                continue
            table = store[other]
            nf = name_field(table.entity, other)
            for fname, ft in table.fields.items():
                fs = ft.fs
                if fs.data_type not in ("entity", "multi_entity") or etype not in fs.valid_types:
                    continue
                if f"{other}.{fname}" in user.grant.rules.hidden_fields:
                    continue
                try:
                    res = self._read(user, {"type": other, "return_fields": [nf] if nf in table.fields else [],
                                            "filters": _where(fname, "is", me),
                                            "paging": {"entities_per_page": BACKREF_ROWS + 1, "current_page": 1}})
                except Passthrough:
                    continue
                ents = res["entities"]
                if not ents:
                    continue
                more = "?" + urlencode([("f", fname), ("op", "is"), ("v", f"{etype}/{eid}")])
                out.append({"type": other, "field": fname, "label": f"{self.type_label(other)} · "
                            f"{self.field_label(other, fname)}", "rows": ents[:BACKREF_ROWS],
                            "name_field": nf, "more": more if len(ents) > BACKREF_ROWS else None})
        return out

    async def thumbnail(self, request: Request) -> Response:
        session = self.sessions.read(request)
        if session is None or not await self._still_allowed(session.login):
            return Response("sign in at /browse/login first\n", status_code=401, media_type="text/plain")
        user = await self._user(request)
        if isinstance(user, Response):  # pragma: no cover - checked just above
            return user
        etype, eid = request.path_params["etype"], int(request.path_params["eid"])
        if self.thumbs is None or not self._visible_type(user, etype):
            return Response(status_code=404)
        try:  # the user must be allowed to see the entity itself
            res = await self.read(user, {"type": etype, "return_fields": [], "filters": _where("id", "is", eid)})
        except Offline:
            return Response(status_code=404)
        if not res["entities"]:
            return Response(status_code=404)
        got = await run_in_threadpool(self.thumbs.get, etype, eid)
        if got is None:
            return Response(status_code=404)
        return FileResponse(got.path, media_type=got.content_type,
                            headers={"cache-control": "private, no-cache", "etag": f'"{got.digest[:32]}"'})


def _ago(seconds: float) -> str:
    """How old the data is, as a person says it."""
    seconds = max(0.0, seconds)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''} ago"
    return f"{int(seconds)} s ago"


def _boxes(fields: list[tuple[str, str]], columns: list[str]) -> Markup:
    return Markup("".join(f'<label><input type="checkbox" name="col" value="{escape(n)}"'
                          f'{" checked" if n in columns else ""}> {escape(label)}</label>' for n, label in fields))


def _where(path: str, relation: str, value: Any) -> dict[str, Any]:
    """One condition in the api3 wire form (the list form is the client's, not the wire's)."""
    return {"logical_operator": "and", "conditions": [{"path": path, "relation": relation, "values": [value]}]}


def _safe_next(nxt: str) -> str:
    """Only our own pages: an open redirect after sign-in would be a phishing aid."""
    return nxt if nxt.startswith("/browse") and "//" not in nxt and "\\" not in nxt else ""
