"""Image fields answered from the local thumbnail copies while the site is down (opt-in).

The cache never stores image fields: their values are the site's signed URLs, which
expire. So a read that returns `image` is passed through, and during an outage it fails,
although `serve/thumbnails.py` holds a copy of most of those images. With
`SGCACHE_OUTAGE_IMAGES=local`, such a read is answered from the store while the site is
down (by the cache's own calls, as the auth grace judges it) with each image field set to
a URL of the local copy, or null where no copy is kept. Off by default: a null where the
site would have shown an image is a visible difference, acceptable only when the
alternative is no answer at all.

The URLs are capabilities, like the site's: signed with the data dir's key, naming one
entity's image, expiring after `URL_SECONDS`. A caller only gets them for rows the read
engine (and the permission policy) let it see.
"""

from __future__ import annotations

from typing import Any, Callable

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from .thumbnails import ThumbnailStore, image_types
from ..runtime import CacheService

#: How long a local image URL works (the site's signed URLs last hours, too).
URL_SECONDS = 3600
PATH = "/outage-image/"
MODES = ("site", "local")


class OutageImages:
    """Decides which reads it may complete, strips and fills their image fields, and
    serves the images behind the URLs it hands out."""

    def __init__(self, service: CacheService, thumbs: ThumbnailStore | None, secret: bytes,
                 site_down: Callable[[], bool]) -> None:
        mode = service.config.outage_images
        if mode not in MODES:
            raise ValueError(f"SGCACHE_OUTAGE_IMAGES must be one of {', '.join(MODES)}, not {mode!r}")
        self.enabled = mode == "local" and thumbs is not None
        self.service = service
        self.thumbs = thumbs
        self.site_down = site_down
        self._signer = URLSafeTimedSerializer(secret, salt="sgcache.outage-image")

    def wanted(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
        """(the read without its image fields, those fields) when this read is one to
        complete locally now; None to leave it to the usual path."""
        if not self.enabled or method != "read" or not self.site_down():
            return None
        etype, fields = params.get("type"), params.get("return_fields")
        if not isinstance(etype, str) or not isinstance(fields, list):
            return None
        kept = {f for t, f in image_types(self.service) if t == etype}
        images = [f for f in fields if f in kept]
        if not images or _mentions(params.get("filters"), kept) or _sorted_by(params.get("sorts"), kept):
            return None
        return {**params, "return_fields": [f for f in fields if f not in kept]}, images

    async def fill(self, result: dict[str, Any], etype: str, images: list[str], request: Request) -> dict[str, Any]:
        """Each entity's image fields: the URL of its local copy, or null."""
        entities = result.get("entities") or []
        base = str(request.base_url).rstrip("/")
        for field in images:
            have = await run_in_threadpool(self.thumbs.have, etype, [e["id"] for e in entities], field) \
                if self.thumbs is not None else set()
            for e in entities:
                e[field] = (f"{base}{PATH}{self._signer.dumps([etype, e['id'], field])}"
                            if e["id"] in have else None)
        return result

    def routes(self) -> list[Route]:
        return [Route(PATH + "{token}", self.image, methods=["GET"])]

    async def image(self, request: Request) -> Response:
        try:
            etype, eid, field = self._signer.loads(request.path_params["token"], max_age=URL_SECONDS)
        except (BadSignature, ValueError, TypeError):
            return Response("this image link is not valid or has expired\n", status_code=403,
                            media_type="text/plain")
        got = await run_in_threadpool(self.thumbs.get, etype, int(eid), field) if self.thumbs else None
        if got is None:
            return Response(status_code=404)
        return FileResponse(got.path, media_type=got.content_type,
                            headers={"cache-control": "private, max-age=600", "etag": f'"{got.digest[:32]}"'})


def _mentions(tree: Any, names: set[str]) -> bool:
    """Whether a filter tree uses one of `names` anywhere (then the site decides)."""
    if isinstance(tree, dict):
        if isinstance(tree.get("path"), str) and tree["path"].split(".")[0] in names:
            return True
        return any(_mentions(v, names) for v in tree.values() if isinstance(v, (dict, list)))
    if isinstance(tree, list):
        return any(_mentions(v, names) for v in tree)
    return False


def _sorted_by(sorts: Any, names: set[str]) -> bool:
    return isinstance(sorts, list) and any(isinstance(s, dict) and s.get("field_name") in names for s in sorts)
