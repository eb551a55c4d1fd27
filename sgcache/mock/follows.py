"""`follow`, `unfollow`, `followers`, `following`: which users follow which entities.

Follows are not entities on the site (no type to read them through), so they live
in the store's meta (saved with ``--state``) and change no record and no event:
nothing a cache holds goes stale when someone follows something. Following twice or
unfollowing what is not followed succeeds and changes nothing, as the client's
docstrings say. Followed entities that were retired since are left out of answers.
"""

from __future__ import annotations

from typing import Any

from ..protocol import errors
from .notes import user_link
from .query import Engine

USER_TYPES = ("HumanUser",)


class Follows:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def _pairs(self) -> list[list[Any]]:
        """[[user_id, entity_type, entity_id], ...] in the order they were made."""
        return self.engine.store.meta.setdefault("follows", [])

    def _entity(self, method: str, value: Any, name: str, user: bool = False) -> tuple[str, int]:
        store = self.engine.store
        if not isinstance(value, dict) or not isinstance(value.get("type"), str) \
                or not isinstance(value.get("id"), int):
            raise errors.crud(method, f"'{name}' must be an entity dict with 'type' and 'id', got {value!r}")
        etype, eid = value["type"], value["id"]
        if user and etype not in USER_TYPES:
            raise errors.crud(method, f"'{name}' must be a HumanUser, got {etype}")
        if etype not in store.schema:
            raise errors.unknown_entity_type(method, etype)
        if store.get_active(etype, eid) is None:
            raise errors.not_found(method, etype, eid)
        return etype, eid

    def _params(self, method: str, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict):
            raise errors.crud(method, "parameters must be an object")
        return params

    def follow(self, actor: Any, params: Any) -> dict[str, Any]:
        p = self._params("follow", params)
        _, uid = self._entity("follow", p.get("user"), "user", user=True)
        etype, eid = self._entity("follow", p.get("entity"), "entity")
        with self.engine.store.transaction():
            if [uid, etype, eid] not in self._pairs:
                self._pairs.append([uid, etype, eid])
                self.engine.store.version += 1  # a --state save has something new to write
        return {"followed": True, "user": {"type": "HumanUser", "id": uid}, "entity": {"type": etype, "id": eid}}

    def unfollow(self, actor: Any, params: Any) -> dict[str, Any]:
        p = self._params("unfollow", params)
        _, uid = self._entity("unfollow", p.get("user"), "user", user=True)
        etype, eid = self._entity("unfollow", p.get("entity"), "entity")
        with self.engine.store.transaction():
            if [uid, etype, eid] in self._pairs:
                self._pairs.remove([uid, etype, eid])
                self.engine.store.version += 1
        return {"unfollowed": True, "user": {"type": "HumanUser", "id": uid},
                "entity": {"type": etype, "id": eid}}

    def followers(self, actor: Any, params: Any) -> list[dict[str, Any]]:
        p = self._params("followers", params)
        etype, eid = self._entity("followers", p.get("entity"), "entity")
        out = []
        for uid, t, i in self._pairs:
            if (t, i) == (etype, eid):
                link = user_link(self.engine, {"type": "HumanUser", "id": uid})
                if link is not None:
                    out.append(link)
        return out

    def following(self, actor: Any, params: Any) -> list[dict[str, Any]]:
        p = self._params("following", params)
        _, uid = self._entity("following", p.get("user"), "user", user=True)
        project = p.get("project")
        pid = None
        if project is not None:
            _, pid = self._entity("following", project, "project")
        wanted = p.get("entity_type")
        if wanted is not None and wanted not in self.engine.store.schema:
            raise errors.unknown_entity_type("following", wanted)
        store = self.engine.store
        out = []
        for u, t, i in self._pairs:
            if u != uid or (wanted and t != wanted):
                continue
            rec = store.get_active(t, i)
            if rec is None:
                continue
            if pid is not None:
                proj = rec.get("project")
                if not (isinstance(proj, dict) and proj.get("id") == pid) and not (t == "Project" and i == pid):
                    continue
            out.append({"type": t, "id": i})
        return out
