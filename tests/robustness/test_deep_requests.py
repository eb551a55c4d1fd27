"""A valid caller cannot make the cache grow by asking for absurdly deep fields (issue 11, 6).

Before: a return field of `created_by.HumanUser.` repeated 10,000 times took 9.5 s to plan
and left the server 1.4 GB larger for good. Now such a read is passed through, unplanned,
and the server keeps no memory for it; the caller gets the site's answer either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .requests_ import read
from .servers import Primed, rpc, serve


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


def test_deep_return_fields_get_the_sites_answer_and_leave_no_memory_behind(primed_any: Primed) -> None:
    site = primed_any.site
    auth = {"script_name": site.script_name, "script_key": site.script_key}
    c = serve(primed_any, "--no-sync")
    try:
        assert c.proc is not None

        def both(params: dict[str, Any]) -> tuple[Any, Any]:
            return rpc(c.url, "read", auth, params).json(), rpc(site.url, "read", auth, params).json()

        page = {"entities_per_page": 5, "current_page": 1}
        mine, theirs = both(read(return_fields=["code", "created_by.HumanUser.name"], paging=page))
        assert mine == theirs and mine["results"]["entities"]
        before = rss_mb(c.proc.pid)
        for hops in (3000, 3001, 3002, 3003):  # distinct requests: no plan to share
            params = read(return_fields=["code", "created_by.HumanUser." * hops + "name"], paging=page)
            mine, theirs = both(params)
            assert mine == theirs
        grown = rss_mb(c.proc.pid) - before
        assert grown < 60, f"the server grew by {grown:.0f} MB for four reads"
    finally:
        c.stop()
