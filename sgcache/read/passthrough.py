"""The one signal of the read layer: "the cache cannot answer this exactly, ask the site"."""

from __future__ import annotations


class Passthrough(Exception):
    """The cache cannot answer this exactly; `reason` is logged and counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
