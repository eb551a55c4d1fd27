"""The serving app in the test's own process, on a real site over loopback.

Its shadow verifier is started but its queue is run by the test (`Shadow.drain`), so a
test decides what happens between a local answer and its shadow call.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from sgcache.config import load_config
from sgcache.runtime import CacheService
from sgcache.serve.app import create_app


class Cache:
    """The serving app in this process, its shadow started but its queue run by the test."""

    def __init__(self, site: Any, env: dict[str, str], **settings: Any) -> None:
        self.site = site
        self.config = load_config(env=env).replace(**{"shadow_rate": 1.0, "shadow_budget": 1000.0, **settings})

    async def __aenter__(self) -> "Cache":
        self.svc = await CacheService.open(self.config, create=False)
        self.app = create_app(self.svc)
        self.shadow = self.app.state.shadow
        await self.shadow.start()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://cache")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.aclose()
        await self.svc.aclose()

    @property
    def auth(self) -> dict[str, str]:
        return {"script_name": self.site.script_name, "script_key": self.site.script_key}

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        r = await self.http.post("/api3/json", content=json.dumps({"method_name": method,
                                                                    "params": [self.auth, params]}))
        body = r.json()
        assert "exception" not in body, body
        return body["results"]

    async def metric(self, name: str, **labels: str) -> float:
        text = (await self.http.get("/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def served(self) -> float:
        return await self.metric("sgcache_requests_total", outcome="served")

    async def status(self) -> dict[str, Any]:
        return (await self.http.get("/status.json")).json()["shadow"]


def by_id(shot: int, fields: list[str]) -> dict[str, Any]:
    return {"type": "Shot", "return_fields": fields, "return_only": "active",
            "filters": {"logical_operator": "and", "conditions": [{"path": "id", "relation": "is", "values": [shot]}]},
            "paging": {"entities_per_page": 500, "current_page": 1}}
