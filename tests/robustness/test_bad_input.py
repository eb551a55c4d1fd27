"""Bad input gets a Fault like the site's: never an HTTP 500, never a crash, no data change.

Each body is sent as raw bytes to the cache and to the mock site. Where the cache
passes the request through, or answers it locally, its answer must equal the site's;
where the cache refuses on its own (limits, unreadable JSON) it must still be a Fault.
Afterwards the server is alive and a checksum of every cached table is unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import httpx
import pytest

from ..e2e.harness import Cache, Site
from .requests_ import cond, nested, read
from .servers import Primed, checksum, post_raw, serve

MAX_BODY = 200_000
Auth = dict[str, str]


def rpc_body(method: Any, *params: Any) -> bytes:
    return json.dumps({"method_name": method, "params": list(params)}).encode()


def read_body(auth: Auth, params: Any) -> bytes:
    return rpc_body("read", auth, params)


def raw_read(auth: Auth, params_json: bytes) -> bytes:
    return b'{"method_name":"read","params":[' + json.dumps(auth).encode() + b"," + params_json + b"]}"


# (id, body, "site" = answer equals the site's / "fault" = the cache's own Fault)
CASES: list[tuple[str, Callable[[Auth], bytes], str]] = [
    ("empty body", lambda a: b"", "fault"),
    ("not json", lambda a: b"not json {", "fault"),
    ("binary", lambda a: b"\xff\xfe\x00\x81garbage", "fault"),
    ("json array", lambda a: b"[]", "fault"),
    ("json null", lambda a: b"null", "fault"),
    ("method_name not a string", lambda a: rpc_body(5, a), "fault"),
    ("params not a list", lambda a: b'{"method_name":"read","params":"x"}', "fault"),
    ("read params not a dict", lambda a: rpc_body("read", a, "notadict"), "site"),
    ("type not a string", lambda a: read_body(a, read(type=123)), "site"),
    ("unknown method", lambda a: rpc_body("drop_tables", a, {}), "site"),
    ("unknown type", lambda a: read_body(a, read(type="NoSuchType")), "site"),
    ("unknown filter field", lambda a: read_body(a, cond("sg_nope", "is", "x")), "site"),
    ("unknown relation", lambda a: read_body(a, cond("code", "resembles", "x")), "site"),
    ("unknown return field", lambda a: read_body(a, read(return_fields=["code", "sg_nope"])), "site"),
    ("unknown deep-link type", lambda a: read_body(a, cond("sg_sequence.NoType.code", "is", "x")), "site"),
    ("relation wrong for type", lambda a: read_body(a, cond("sg_cut_in", "contains", "1")), "site"),
    ("type injection", lambda a: read_body(a, read(type='Shot; DROP TABLE "Shot"')), "site"),
    ("field injection", lambda a: read_body(a, cond('code" OR 1=1 --', "is", "x")), "site"),
    ("relation injection", lambda a: read_body(a, cond("code", "is; DELETE FROM Shot", "x")), "site"),
    ("return field injection", lambda a: read_body(a, read(return_fields=["code", "x' OR '1'='1"])), "site"),
    ("sort key injection", lambda a: read_body(a, read(sorts=[{"field_name": 'code; DROP TABLE "Shot"',
                                                                  "direction": "asc"}])), "site"),
    ("sort direction injection", lambda a: read_body(a, read(sorts=[{"field_name": "code",
                                                                        "direction": "asc; DROP TABLE Shot"}])), "site"),
    ("value injection", lambda a: read_body(a, cond("code", "is", "x' OR '1'='1")), "site"),
    ("value LIKE wildcards", lambda a: read_body(a, cond("code", "contains", "%_\\'")), "site"),
    ("value with NUL", lambda a: read_body(a, cond("code", "is", "a\x00b")), "site"),
    ("lone surrogate", lambda a: raw_read(a, b'{"type":"Shot","return_fields":["code"],"filters":{"logical_operator":'
                                             b'"and","conditions":[{"path":"code","relation":"is","values":["\\ud800"]}]}}'),
     "site"),
    ("huge integer", lambda a: read_body(a, cond("sg_cut_in", "greater_than", 10**30)), "site"),
    ("string for number", lambda a: read_body(a, cond("sg_cut_in", "greater_than", "abc")), "site"),
    ("float for id", lambda a: read_body(a, cond("id", "is", 1.5)), "site"),
    ("bool for id", lambda a: read_body(a, cond("id", "is", True)), "site"),
    ("list for entity", lambda a: read_body(a, cond("sg_sequence", "is", [1, 2])), "site"),
    ("entity without id", lambda a: read_body(a, cond("sg_sequence", "is", {"type": "Sequence"})), "site"),
    ("entity with string id", lambda a: read_body(a, cond("sg_sequence", "is", {"type": "Sequence", "id": "1 OR 1"})),
     "site"),
    ("in without values", lambda a: read_body(a, cond("id", "in")), "site"),
    ("between one value", lambda a: read_body(a, cond("sg_cut_in", "between", 1)), "site"),
    ("negative page size", lambda a: read_body(a, read(paging={"entities_per_page": -1, "current_page": 1})), "site"),
    ("page zero", lambda a: read_body(a, read(paging={"entities_per_page": 10, "current_page": 0})), "site"),
    ("string page size", lambda a: read_body(a, read(paging={"entities_per_page": "10", "current_page": 1})), "site"),
    ("page far away", lambda a: read_body(a, read(paging={"entities_per_page": 10, "current_page": 10**15})), "site"),
    ("bad return_only", lambda a: read_body(a, read(return_only="bogus")), "site"),
    ("return_fields a string", lambda a: read_body(a, read(return_fields="code")), "site"),
    ("filters a list", lambda a: read_body(a, read(filters=[["code", "is", "x"]])), "site"),
    ("filters nested 20 deep", lambda a: read_body(a, nested(20)), "site"),
    ("filters nested 70 deep", lambda a: read_body(a, nested(70)), "site"),
    ("JSON nested 100000 deep", lambda a: b'{"method_name":"read","params":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
     "fault"),
    ("NaN", lambda a: raw_read(a, b'{"type":"Shot","filters":{"logical_operator":"and","conditions":'
                                  b'[{"path":"sg_cut_in","relation":"is","values":[NaN]}]}}'), "fault"),
    ("body over the limit", lambda a: read_body(a, cond("code", "in", *["x" * 100] * (MAX_BODY // 100))), "fault"),
    ("create with bad auth", lambda a: rpc_body("create", {"script_name": "x", "script_key": "y"},
                                                {"type": "Shot", "fields": []}), "site"),
    ("delete of a missing id", lambda a: rpc_body("delete", a, {"type": "Shot", "id": 10**9}), "site"),
    ("update with injection", lambda a: rpc_body("update", a, {"type": "Shot", "id": 10**9, "fields": [
        {"field_name": "code'; DROP TABLE Shot; --", "value": 1}]}), "site"),
    ("batch not a list", lambda a: rpc_body("batch", a, {"request_type": "delete"}), "site"),
]


@pytest.fixture(scope="module")
def cache(primed_any: Primed) -> Iterator[Cache]:
    c = serve(primed_any, "--no-sync", max_body_bytes=MAX_BODY)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def before(primed_any: Primed, cache: Cache) -> dict[str, str]:
    return checksum(primed_any.db_url)


def answer(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


@pytest.mark.parametrize("name, build, expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_fault_like_the_sites(site: Site, cache: Cache, before: dict[str, str],
                                               name: str, build: Callable[[Auth], bytes], expect: str) -> None:
    body = build({"script_name": site.script_name, "script_key": site.script_key})
    got = answer(post_raw(cache.url, body))
    if expect == "fault":
        assert got["exception"] is True and isinstance(got["message"], str) and "results" not in got
    else:
        assert got == post_raw(site.url, body).json()


def test_other_http_methods_and_paths_never_500(cache: Cache) -> None:
    for method, path in [("GET", "/api3/json"), ("PUT", "/api3/json"), ("GET", "/upload/%00%ff"),
                         ("POST", "/file_serve/attachment/not-a-number"), ("GET", "/" + "x" * 5000)]:
        r = httpx.request(method, cache.url + path, content=b"\x00" * 10, timeout=30)
        assert r.status_code < 500 or r.status_code in (502, 503, 504), (method, path, r.status_code)


def test_nothing_changed_and_the_server_is_alive(primed_any: Primed, cache: Cache, before: dict[str, str]) -> None:
    assert cache.proc is not None and cache.proc.poll() is None
    assert checksum(primed_any.db_url) == before
    assert "Traceback" not in (cache.log.read_text() if cache.log else "")
