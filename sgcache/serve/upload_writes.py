"""Write-through for the form endpoints that change entities: uploads and shared thumbnails.

``/upload/upload_file``, ``/upload/publish_thumbnail``, ``/upload/api_link_file`` and
``/upload/share_thumbnail`` are streamed to the site like every other file path, but a
success (a reply starting with ``1``) has changed entities the cache may hold: the target's
file field, or its ``updated_at``/``updated_by`` when only its image changed, and a new
Attachment. The client writes its form fields before any file part, so the first bytes of
the body name the entities; they are kept while the body streams through, and the touched
entities are handed to ``on_write`` as an update batch, before the caller gets its answer.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.responses import Response

from ..protocol import jsoncodec
from .relay import site_headers

PATHS = frozenset({"/upload/upload_file", "/upload/publish_thumbnail", "/upload/api_link_file",
                   "/upload/share_thumbnail"})
#: Bytes of the body kept: the client's fields come first and are short.
PREFIX = 64 * 1024
_PART = re.compile(rb'name="(entity_type|entity_id|entities|source_entity)"\r\n\r\n([^\r]*)\r\n')
_ATTACHMENT = re.compile(rb"^1:(\d+)")

OnWrite = Callable[[str, Any, Any], Awaitable[None]]


class UploadWrite:
    """One form post on its way to the site, and what its success changed."""

    def __init__(self, path: str, content_type: str, on_write: OnWrite) -> None:
        self.path = path
        self.content_type = content_type
        self.on_write = on_write
        self.head = bytearray()

    @classmethod
    def of(cls, method: str, path: str, content_type: str, on_write: OnWrite | None) -> UploadWrite | None:
        if on_write is None or method != "POST" or path not in PATHS:
            return None
        return cls(path, content_type, on_write)

    async def tee(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in body:
            if len(self.head) < PREFIX:
                self.head += chunk[:PREFIX - len(self.head)]
            yield chunk

    def fields(self) -> dict[str, str]:
        head = bytes(self.head)
        if self.content_type.startswith("multipart/"):
            return {k.decode(): v.decode("utf-8", "replace") for k, v in _PART.findall(head)}
        return {k: v[0] for k, v in urllib.parse.parse_qs(head.decode("utf-8", "replace")).items()}

    def targets(self, reply: bytes) -> list[tuple[str, int]]:
        f = self.fields()
        out: list[tuple[str, int]] = []
        refs = f.get("entities", "").split(",") if self.path.endswith("share_thumbnail") else \
            [f"{f.get('entity_type', '')}_{f.get('entity_id', '')}"]
        for ref in refs:
            etype, _, eid = ref.rpartition("_")
            if etype and eid.isdigit():
                out.append((etype, int(eid)))
        m = _ATTACHMENT.match(reply)
        if m and not self.path.endswith("share_thumbnail"):
            out.append(("Attachment", int(m.group(1))))
        return out

    async def finish(self, resp: httpx.Response, release: Callable[[], None]) -> Response:
        """Read the site's short text answer, write its changes through, answer the caller."""
        try:
            reply = await resp.aread()
        finally:
            await resp.aclose()
            release()
        if resp.status_code == 200 and reply.startswith(b"1"):
            targets = self.targets(reply)
            if targets:
                items = [{"request_type": "update", "type": t, "id": i, "fields": []} for t, i in targets]
                await self.on_write("batch", [None, items],
                                    jsoncodec.dumps({"results": [{"type": t, "id": i} for t, i in targets]}))
        out = Response(reply, status_code=resp.status_code)
        # Each Set-Cookie stays its own header (a dict would merge them into one); the
        # reply was decoded by aread(), so its content-encoding no longer applies.
        out.raw_headers = [*site_headers(resp, decoded=True), *out.raw_headers]  # + content-length
        return out
