"""Configuration: defaults < config file < SGCACHE_* environment < command-line flags.

One immutable object built once and passed explicitly to everything that needs it;
no module reads the environment on its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "SGCACHE_"


@dataclass(frozen=True)
class Config:
    shotgun_url: str = "http://127.0.0.1:8020"
    script_name: str = ""
    script_key: str = field(default="", repr=False)
    data_dir: str = ".sgcache"
    db_url: str = ""  # default: SQLite in data_dir
    schema: str = ""  # path of the chosen (filtered) schema JSON; empty = whole site
    rules: str = ""  # optional rules file applied to the site schema
    site_moved_from: str = ""  # the site's former URL: a cache made there is re-recorded at shotgun_url
    host: str = "127.0.0.1"
    port: int = 8010
    upstream_timeout: float = 30.0
    upstream_connect_timeout: float = 5.0
    page_size: int = 500
    auth_ttl: float = 300.0  # seconds a verified credential is trusted
    auth_grace: float = 3600.0  # how long verified callers keep cached reads during an outage
    allow_scripts: tuple[str, ...] = ()
    allow_logins: tuple[str, ...] = ()
    poll_interval: float = 0.5  # the shortest poll cycle; poll_budget may stretch it
    scan_interval: float = 300.0
    backlog_ttl: float = 300.0
    watch_events: bool = True
    log_json: bool = False
    max_body_bytes: int = 50_000_000  # larger api3 bodies get a Fault (uploads are streamed, no limit)
    max_json_depth: int = 64  # api3 bodies nested deeper go to the site as sent, unread by the engine
    # Connections to the site, one bounded pool per kind of traffic, so callers' traffic
    # never makes the cache's own calls wait (see sgcache/upstream/lanes.py).
    upstream_own_connections: int = 20  # the cache's own calls: events, scans, refresh, probes
    upstream_auth_connections: int = 20  # verifying callers' credentials
    upstream_passthrough_connections: int = 64  # callers' api3 calls passed through (writes among them)
    upstream_transfer_connections: int = 32  # callers' uploads and downloads (raw paths)
    transfer_per_client: int = 16  # uploads/downloads one client address may have at once (0: no limit)
    transfer_timeout: float = 30.0  # seconds an upload/download passthrough may take, plus 1 s ...
    transfer_min_rate: int = 1024  # ... per this many bytes moved (a caller trickling a body is cut off)
    shadow_rate: float = 0.01  # share of locally answered reads asked again of the site, to compare
    shadow_budget: float = 2.0  # most shadow calls per second to the site (per host; split between workers)
    # api3 request intake (sgcache/serve/intake.py): the memory and CPU a caller can make the cache spend.
    max_inflight_bytes: int = 256_000_000  # api3 bodies held and parsed at once, per process; past it a Fault
    max_unverified_body_bytes: int = 65_536  # bodies past this must begin with credentials the site accepts
    max_json_items: int = 1_000_000  # bodies with more JSON values go to the site unparsed
    # Fair shares between callers (address + credentials; sgcache/serve/fairness.py).
    serve_active: int = 64  # api3 requests worked on at once per process, turns going round the callers (0: off)
    caller_active: int = 1  # of which one caller's at most while others are served too (alone: all)
    caller_passthrough: int = 16  # one caller's api3 calls waiting on the site at once (a quarter of the passthrough lane)
    caller_max_wait: float = 30.0  # seconds a request may wait for its turn or place before a Busy Fault
    refused_body_delay: float = 5.0  # a large body refused again (or without credentials) is held unread this long, then closed
    # Per permission group, what the site shows its users (sgcache/serve/permissions.py):
    # inline JSON, a JSON/TOML file, or a table in the config file; empty: the site's default roles.
    permissions: str = ""
    permissions_ttl: float = 1.0  # seconds a caller's group and assignments are reused
    permissions_quarantine: float = 0.0  # seconds a group a shadow mismatch quarantined stays so (0: until cleared)
    # The read-only browser at /browse and its local thumbnails (sgcache/serve/browse, serve/thumbnails.py).
    browse_session_hours: float = 12.0  # a browser sign-in lasts this long (a cookie signed with a per-data-dir key)
    thumbnail_cache_mb: int = 512  # local copies of images, least recently shown evicted first (0: none kept)
    thumbnail_interval: float = 10.0  # seconds between looks for rows whose image may have changed
    thumbnail_hosts: tuple[str, ...] = ()  # hosts images may be fetched from besides the site's (empty: any)
    outage_images: str = "site"  # "local": api3 reads of image fields answered with local copies while the site is down
    # Full scans and rebuilds (sgcache/sync/scan.py): site requests in flight at once, and the
    # page size (0: the site's api_max_entities_per_page; smaller values only lower it).
    scan_concurrency: int = 4
    scan_page_size: int = 0
    # Coalesced passthrough (sgcache/serve/coalesce.py): identical concurrent reads by the same
    # credentials share one site call; an answer is reused for `coalesce_window` s after it arrives.
    coalesce: bool = True
    coalesce_window: float = 1.0
    # Event polling (sgcache/sync/loop.py): the watcher polls every `poll_interval` s unless its
    # requests to the site (polls and the re-reads their events cause) would then average more
    # than `poll_budget` a second; then it polls less often (at most 5 s apart). 0: no budget.
    poll_budget: float = 2.0
    # PostgreSQL streaming replicas API servers read from (sgcache/store/replicas.py); writes
    # stay on db_url. A replica further behind than `replica_max_lag` s, or down, is left out.
    db_read_urls: tuple[str, ...] = field(default=(), repr=False)
    replica_max_lag: float = 5.0

    @property
    def public_shotgun_url(self) -> str:
        """The site's URL as callers may see it (status pages, redirects): no user:password@."""
        return public_url(self.shotgun_url)

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'cache.sqlite'}"

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **_coerce_all(changes))

    def redacted(self) -> dict[str, Any]:
        """For logs and status: everything except secrets."""
        d = dataclasses.asdict(self)
        d["script_key"] = "***" if self.script_key else ""
        if "@" in d["db_url"]:
            d["db_url"] = _redact_url(d["db_url"])
        d["db_read_urls"] = [_redact_url(u) if "@" in u else u for u in self.db_read_urls]
        for name in ("shotgun_url", "site_moved_from"):  # a proxy's user:password@
            if "@" in d[name]:
                d[name] = _redact_url(d[name])
        return d

    def __repr__(self) -> str:
        """The redacted form: a Config printed in a log or a traceback shows no password."""
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self.redacted().items()) + ")"


def public_url(url: str) -> str:
    """`url` without its userinfo (credentials for a proxy or gateway): the only form of
    the site's URL that may leave the process, in a page, a JSON answer or a redirect."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _redact_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


_FIELDS = {f.name: f for f in fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    f = _FIELDS.get(name)
    if f is None:
        raise ValueError(f"unknown setting {name!r}")
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(default, int) and not isinstance(default, bool):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if isinstance(value, (dict, list)):  # a table in the config file (permissions)
        return json.dumps(value)
    return str(value)


def _coerce_all(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _coerce(k, v) for k, v in values.items()}


def load_config(file: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the Config from its layers. `overrides` (CLI flags) skip None values."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    file = file or env.get(ENV_PREFIX + "CONFIG")
    if file:
        values.update(_read_file(Path(file)))
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = v
    return Config(**_coerce_all(values))


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".toml",):
        import tomllib
        data = tomllib.loads(text)
    else:
        data = json.loads(text)
    return {k.replace("-", "_"): v for k, v in data.items()}
