"""RPCs besides `read` and `summarize` that the store answers where exact, by method name.

The server dispatches on it, and shadow verification re-answers a sample with the same
functions to compare them with the site.
"""

from __future__ import annotations

from typing import Any, Callable

from .note_threads import note_thread
from .text_search import text_search

LOCAL_RPCS: dict[str, Callable[..., Any]] = {"note_thread_contents": note_thread,
                                             "query_display_name_cache": text_search}
