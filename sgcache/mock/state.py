"""Save and reload the whole site (schema, records, files, credentials) as one pickle.

Written to a temporary file and renamed, so a crash mid-save keeps the old state.
Only trusted files should be loaded: this is pickle.
"""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path
from typing import Any

from ..schema import Schema
from .store import Store

FORMAT = 1


def save(store: Store, path: str | os.PathLike[str]) -> str:
    path = Path(path)
    with store.lock:
        state: dict[str, Any] = {
            "format": FORMAT,
            "schema": store.schema.to_json(),
            "tables": store.tables,
            "retired": store.retired,
            "next_ids": store.next_ids,
            "files": store.files,
            "meta": store.meta,
        }
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        store.saved_version = store.version
    return str(path)


def save_if_changed(store: Store, path: str | os.PathLike[str]) -> str | None:
    """Save unless nothing changed since the last load or save (a 1M site takes a while)."""
    if store.saved_version == store.version and Path(path).exists():
        return None
    return save(store, path)


def load(path: str | os.PathLike[str]) -> Store:
    # millions of small dicts: the cyclic GC would otherwise run hundreds of times
    enabled = gc.isenabled()
    gc.disable()
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
    finally:
        if enabled:
            gc.enable()
    gc.freeze()  # the loaded site is long-lived: keep it out of later collections
    if state.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown state format {state.get('format')!r}")
    store = Store(Schema.from_json(state["schema"]))
    store.tables = state["tables"]
    store.retired = state["retired"]
    store.next_ids = state["next_ids"]
    store.files = state["files"]
    store.meta = state["meta"]
    for t in list(store.tables):
        store.ensure_type(t)
    for t in store.schema.types():
        store.ensure_type(t)
    store.saved_version = store.version
    return store
