"""Thumbnails kept locally, so people can still see them while the site is down.

The site serves images from signed, expiring URLs, and the cache never stores image
fields (their values expire). So a background worker follows the cached rows instead:
a row whose `updated_at` moved (an event, a scan or a write-through refreshed it) may
have a new image; the worker asks the site for that row's `image` URL, and when the
URL's path differs from the one its copy came from, downloads the bytes.

Copies live in `<data dir>/thumbnails/` by content (sha256; a thumbnail shared by many
entities is kept once), with a small SQLite index beside them (which entity points at
which blob, when each blob was last shown). The store is capped in bytes
(`SGCACHE_THUMBNAIL_CACHE_MB`); the least recently shown blobs are evicted first.
The index is its own file, not the cache database: it is local to the host, as the files are.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..protocol import errors
from ..protocol.values import parse_datetime
from ..read.passthrough import Passthrough
from ..runtime import CacheService
from ..upstream import OWN, UpstreamUnavailable

log = logging.getLogger("sgcache.thumbnails")

#: The image fields whose copies are kept (the site's thumbnail of a record).
IMAGE_FIELDS = ("image",)
#: Larger downloads are refused (a thumbnail is tens of KB; this bounds a bad URL).
MAX_IMAGE_BYTES = 20_000_000
#: Rows looked at per step of a pass (one site read per step).
BATCH = 200
#: Paths the site answers while it is still processing an upload: never kept.
PLACEHOLDER_MARK = "/images/status/transient/"
#: Rows updated in the mark's second are looked at again for this long (see `step`).
RECHECK_SECONDS = 120.0


def _recent(at: str, seconds: float) -> bool:
    when = parse_datetime(at)
    return when is not None and time.time() - when.timestamp() < seconds


def source_key(url: str) -> str:
    """What identifies an image across re-signed URLs: the URL without its query."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


@dataclass(frozen=True)
class Stored:
    path: Path
    content_type: str
    digest: str


class ThumbnailStore:
    """Content-addressed image files under `root`, indexed in `root/index.sqlite`.

    Blocking (sqlite3 and files): call it from a thread in async code. Safe across the
    server's worker processes: SQLite locks the index, and blob files are written
    atomically under their digest.
    """

    def __init__(self, root: Path, cap_bytes: int) -> None:
        self.root = root
        self.cap_bytes = cap_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._db = root / "index.sqlite"
        with self._conn() as c:
            c.executescript("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS refs (entity_type TEXT, entity_id INTEGER, field TEXT,
                    source TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (entity_type, entity_id, field));
                CREATE INDEX IF NOT EXISTS ix_refs_digest ON refs (digest);
                CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL,
                    content_type TEXT NOT NULL, used REAL NOT NULL);
                CREATE INDEX IF NOT EXISTS ix_blobs_used ON blobs (used);
                CREATE TABLE IF NOT EXISTS marks (entity_type TEXT PRIMARY KEY, updated_at TEXT, last_id INTEGER);
            """)

    @contextlib.contextmanager
    def _conn(self) -> Any:
        c = sqlite3.connect(self._db, timeout=30, isolation_level=None)
        try:
            c.execute("PRAGMA busy_timeout=30000")
            yield c
        finally:
            c.close()

    def _blob_path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    # -- the worker's side --------------------------------------------------------------
    def mark(self, etype: str) -> tuple[str | None, int]:
        """How far the worker has looked at `etype`: (updated_at, id) of the last row seen."""
        with self._conn() as c:
            row = c.execute("SELECT updated_at, last_id FROM marks WHERE entity_type=?", (etype,)).fetchone()
        return (row[0], int(row[1] or 0)) if row else (None, 0)

    def set_mark(self, etype: str, updated_at: str | None, last_id: int) -> None:
        with self._conn() as c:
            c.execute("INSERT OR REPLACE INTO marks VALUES (?, ?, ?)", (etype, updated_at, last_id))

    def sources(self, etype: str, ids: Iterable[int], field: str) -> dict[int, str]:
        """The source key each of these entities' copies came from."""
        ids = list(ids)
        if not ids:
            return {}
        with self._conn() as c:
            q = ",".join("?" * len(ids))
            return dict(c.execute(f"SELECT entity_id, source FROM refs WHERE entity_type=? AND field=? "
                                  f"AND entity_id IN ({q})", (etype, field, *ids)).fetchall())

    def put(self, etype: str, eid: int, field: str, source: str, data: bytes, content_type: str) -> str:
        """Keep `data` as this entity's image (once per content), then evict to the cap."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._blob_path(digest)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO blobs VALUES (?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET used=excluded.used",
                      (digest, len(data), content_type, time.time()))
            c.execute("INSERT OR REPLACE INTO refs VALUES (?, ?, ?, ?, ?)", (etype, eid, field, source, digest))
            c.execute("COMMIT")
        self.evict()
        return digest

    def clear(self, etype: str, eid: int, field: str) -> None:
        """The entity has no image any more: forget its copy (the blob goes when unused)."""
        with self._conn() as c:
            c.execute("DELETE FROM refs WHERE entity_type=? AND entity_id=? AND field=?", (etype, eid, field))

    def evict(self) -> int:
        """Drop least recently used blobs until the store fits its cap; how many went."""
        gone: list[str] = []
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            total = c.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0]
            if total > self.cap_bytes:
                for digest, size in c.execute("SELECT digest, size FROM blobs ORDER BY used").fetchall():
                    if total <= self.cap_bytes:
                        break
                    c.execute("DELETE FROM blobs WHERE digest=?", (digest,))
                    c.execute("DELETE FROM refs WHERE digest=?", (digest,))
                    total -= size
                    gone.append(digest)
            c.execute("COMMIT")
        for digest in gone:
            with contextlib.suppress(FileNotFoundError):
                self._blob_path(digest).unlink()
        return len(gone)

    # -- the browser's side -------------------------------------------------------------
    def get(self, etype: str, eid: int, field: str = "image", touch: bool = True) -> Stored | None:
        """The local copy of an entity's image, marked as just used (for eviction)."""
        with self._conn() as c:
            row = c.execute("SELECT b.digest, b.content_type FROM refs r JOIN blobs b ON b.digest = r.digest "
                            "WHERE r.entity_type=? AND r.entity_id=? AND r.field=?", (etype, eid, field)).fetchone()
            if row is None:
                return None
            if touch:
                c.execute("UPDATE blobs SET used=? WHERE digest=?", (time.time(), row[0]))
        path = self._blob_path(row[0])
        return Stored(path, row[1], row[0]) if path.exists() else None

    def have(self, etype: str, ids: Iterable[int], field: str = "image") -> set[int]:
        """Which of these entities have a local copy (one query for a page of rows)."""
        return set(self.sources(etype, ids, field))

    def size(self) -> int:
        with self._conn() as c:
            return int(c.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0])


def image_types(service: CacheService) -> list[tuple[str, str]]:
    """(type, field) pairs to keep copies of: cached types whose site schema has the image
    field (the field itself is never cached) and an `updated_at` to follow."""
    out = []
    store = service.store
    for etype, ent in store.schema.entities.items():
        if etype not in store or "updated_at" not in store[etype].fields:
            continue
        for f in IMAGE_FIELDS:
            fs = ent.fields.get(f)
            if fs is not None and fs.data_type == "image":
                out.append((etype, f))
    return out


class ThumbnailFetcher:
    """The background worker: keeps `store` in step with the images of changed rows."""

    def __init__(self, service: CacheService, store: ThumbnailStore, *, interval: float,
                 hosts: tuple[str, ...] = (), should_run: Callable[[], bool] | None = None) -> None:
        self.service = service
        self.store = store
        self.interval = interval
        self.hosts = {h.lower() for h in hosts}
        self.should_run = should_run or self._hold_lock
        self._lock_fd: int | None = None
        self.fetched = 0
        self.failed = 0
        self._site = urlsplit(service.upstream.base_url)
        self._other: httpx.AsyncClient | None = None

    def _hold_lock(self) -> bool:
        """One fetcher per data dir (per host: the copies are the host's): the server
        process holding `thumbnails/fetch.lock`; another takes over if it exits."""
        if self._lock_fd is None:
            fd = os.open(self.store.root / "fetch.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._lock_fd = fd
        return True

    def _allowed(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        return not self.hosts or host in self.hosts or host == (self._site.hostname or "").lower()

    async def _download(self, url: str) -> tuple[bytes, str] | None:
        p = urlsplit(url)
        if p.scheme not in ("http", "https") or not self._allowed(url):
            return None
        if (p.scheme, p.netloc) == (self._site.scheme, self._site.netloc):
            client = self.service.upstream.clients[OWN]  # the site's own host: its pool and transport
        else:  # object storage (S3): signed URLs, no credentials of ours go there
            if self._other is None:
                self._other = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=True)
            client = self._other
        async with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                return None
            chunks, n = [], 0
            async for chunk in resp.aiter_bytes():
                n += len(chunk)
                if n > MAX_IMAGE_BYTES:
                    return None
                chunks.append(chunk)
            ctype = resp.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
        return b"".join(chunks), ctype if ctype.startswith("image/") else "application/octet-stream"

    def _changed(self, etype: str, mark: tuple[str | None, int]) -> list[dict[str, Any]]:
        """The next rows after `mark` in (updated_at, id) order, read by the read engine."""
        at, last = mark
        cond: Any = []
        if at is not None:
            cond = {"logical_operator": "or", "conditions": [
                {"path": "updated_at", "relation": "greater_than", "values": [at]},
                {"logical_operator": "and", "conditions": [
                    {"path": "updated_at", "relation": "is", "values": [at]},
                    {"path": "id", "relation": "greater_than", "values": [last]}]}]}
        params = {"type": etype, "return_fields": ["updated_at"], "filters": cond,
                  "sorts": [{"field_name": "updated_at", "direction": "asc"}, {"field_name": "id", "direction": "asc"}],
                  "paging": {"entities_per_page": BATCH, "current_page": 1}}
        with self.service.store.engine.connect() as conn:
            return list(self.service.reader.read(conn, params)["entities"])

    async def step(self, etype: str, field: str, first: bool = False) -> bool:
        """Look at the next batch of changed rows of `etype`; False when none were left.

        `updated_at` has a resolution of a second: a row changed again within the second
        of the mark has the mark's time and may have a lower id. So the first step of a pass
        starts at the beginning of the mark's second while that second is recent (the events
        bring such a change within the event lag); rows already copied cost no download.
        """
        at, last = await asyncio.to_thread(self.store.mark, etype)
        if first and at is not None and _recent(at, RECHECK_SECONDS):
            last = 0
        rows = await asyncio.to_thread(self._changed, etype, (at, last))
        if not rows:
            return False
        ids = [r["id"] for r in rows]
        site = await self.service.upstream.call("read", {
            "type": etype, "return_fields": [field], "return_only": "active",
            "filters": {"logical_operator": "and", "conditions": [{"path": "id", "relation": "in", "values": ids}]},
            "paging": {"entities_per_page": len(ids), "current_page": 1},
            "api_return_image_urls": True, "return_paging_info_without_counts": True})
        urls = {e["id"]: e.get(field) for e in site.get("entities") or []}
        have = await asyncio.to_thread(self.store.sources, etype, ids, field)
        for eid in ids:
            url = urls.get(eid)
            if not isinstance(url, str) or not url:
                if eid in have and eid in urls:  # the image was cleared on the site
                    await asyncio.to_thread(self.store.clear, etype, eid, field)
                continue
            key = source_key(url)
            if PLACEHOLDER_MARK in key or have.get(eid) == key:
                continue
            try:
                got = await self._download(url)
            except httpx.HTTPError as e:
                self.failed += 1
                log.info("thumbnail of %s %d not fetched: %s", etype, eid, type(e).__name__)
                continue
            if got is None:
                self.failed += 1
                continue
            await asyncio.to_thread(self.store.put, etype, eid, field, key, got[0], got[1])
            self.fetched += 1
        last = rows[-1]
        await asyncio.to_thread(self.store.set_mark, etype, last.get("updated_at"), last["id"])
        return len(rows) == BATCH

    async def run_once(self) -> None:
        """One pass over every image type, until no changed rows are left. A type the
        engine will not read now (being rebuilt, not primed) waits for the next pass."""
        for etype, field in image_types(self.service):
            try:
                if await self.step(etype, field, first=True):
                    while await self.step(etype, field):
                        pass
            except Passthrough as e:
                log.debug("thumbnails of %s wait: %s", etype, e.reason)

    async def run(self) -> None:
        while True:
            if self.should_run():
                try:
                    await self.run_once()
                except asyncio.CancelledError:
                    raise
                except (UpstreamUnavailable, errors.Fault) as e:  # the site is down: next time
                    log.debug("thumbnail pass stopped: %s", e)
                except Exception:
                    log.exception("thumbnail pass failed")
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if self._other is not None:
                await self._other.aclose()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None
