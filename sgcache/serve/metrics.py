"""Request accounting: Prometheus metrics and the structured request log line.

Every api3 request ends in `Metrics.observe`, which counts it by method, outcome
(served, passthrough, refused, fault) and passthrough reason, times it, keeps the
running totals the status page plots, and writes one log line that names the caller
(script or user, and `sudo_as_login`) but never a secret. State gauges (lag, backlog,
rows, scans) are set by the status monitor, which samples the shared database.
All of it lives in an app-owned registry: no process-global state.

Under `serve --workers N` the supervisor sets prometheus_client's own switch,
`PROMETHEUS_MULTIPROC_DIR`, for its workers: every worker then answers `/metrics` with
the sum over all workers (counters, histograms) and the live workers' latest state.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from ..upstream import Upstream

LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)

#: Passthrough reasons -> low-cardinality metric labels, first match wins. Reasons are
#: free text from the read engine; the label set is read off this table.
REASONS: list[tuple[str, re.Pattern[str]]] = [(label, re.compile(rx)) for label, rx in [
    ("permission_quarantine", r"^permission quarantine"),  # a shadow read found the caller's group's policy wrong
    ("permission", r"^permission: "),  # what this caller may see is the site's to say (serve/permissions.py)
    ("quarantine", r"^quarantined"),  # a shadow read found this shape answered wrongly (serve/shadow.py)
    ("not_ready", r"being backfilled|being rebuilt|not ready|not primed"),
    ("limits", r"through more than \d+ links|^more than \d+|^filters over \d+|tables in one join"),  # read/engine.py bounds
    ("nul_text", r"holding NUL"),
    ("withheld", r"withheld from the cache"),  # EventLogEntry.meta about a refused field
    ("uncached_type", r"^uncached entity type"),
    ("uncached_field", r"^uncached field"),
    ("time_relative", r"^time-relative"),
    ("relation", r"^relation .* not answered locally"),
    ("link_target", r"link target|no fixed target types|^name field"),
    ("deep_path", r"deep path|deep filter"),
    ("archived", r"archived"),
    ("params", r"^unsupported read params|^params not|^return_fields"),
    ("paging", r"paging|^page size"),
    ("sort", r"sort"),
    ("summary", r"^\w+ over \w+ field"),  # a summary type the cache does not compute for that field
    ("invalid", r"^invalid request"),
    ("error", r"^error$"),
    ("method", r"^method$"),  # not a read: every other api3 method goes to the site
]]


def passthrough_reason(reason: str | None) -> str:
    """The metric label of a passthrough reason."""
    if not reason:
        return ""
    for label, rx in REASONS:
        if rx.search(reason):
            return label
    return "other"


@dataclass(frozen=True)
class PassthroughNote:
    at: float
    method: str
    entity_type: str | None
    reason: str


class Metrics:
    """The app's Prometheus registry, request counters and running totals."""

    def __init__(self, upstream: Upstream | None = None, *, recent: int = 50,
                 multiprocess_dir: str | None = None) -> None:
        mp_dir = multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # prometheus_client's switch
        r = self._own = CollectorRegistry()
        if mp_dir:  # expose the files every worker writes, not just this process's values
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=mp_dir)
        else:
            self.registry = r
        state: Literal["livemostrecent"] = "livemostrecent"  # the same shared state, sampled by every worker
        self.requests = Counter("sgcache_requests_total", "api3 requests by method, outcome and passthrough reason",
                                ["method", "outcome", "reason"], registry=r)
        self.passthrough = Counter("sgcache_passthrough_total", "reads passed through, by reason",
                                   ["reason"], registry=r)
        self.latency = Histogram("sgcache_request_seconds", "api3 request latency",
                                 ["method", "outcome"], registry=r, buckets=LATENCY_BUCKETS)
        # Gauges the status monitor sets from the shared database and the site.
        self.event_lag_seconds = Gauge("sgcache_event_lag_seconds",
                                       "age of the oldest site event not yet applied (0 when caught up)", registry=r,
                                       multiprocess_mode=state)
        self.event_lag_ids = Gauge("sgcache_event_lag_ids", "site's last event id minus the applied one", registry=r,
                                   multiprocess_mode=state)
        self.last_event_id = Gauge("sgcache_last_event_id", "last event id applied to the cache", registry=r,
                                   multiprocess_mode=state)
        self.site_event_id = Gauge("sgcache_site_last_event_id", "the site's newest event id", registry=r,
                                   multiprocess_mode=state)
        self.backlog = Gauge("sgcache_event_backlog", "event ids skipped in the log and still awaited", registry=r,
                             multiprocess_mode=state)
        self.rows = Gauge("sgcache_rows", "cached entities per type", ["entity_type", "state"], registry=r,
                          multiprocess_mode=state)
        self.scan_time = Gauge("sgcache_last_scan_timestamp_seconds", "when the last scan started (epoch)",
                               ["kind"], registry=r, multiprocess_mode=state)
        self.scan_seconds = Gauge("sgcache_last_scan_duration_seconds", "how long the last scan took",
                                  ["kind"], registry=r, multiprocess_mode=state)
        self.leader = Gauge("sgcache_sync_leader", "1 if this process (any worker, under --workers) runs the sync",
                            registry=r, multiprocess_mode="livemax")
        self.ready = Gauge("sgcache_ready", "1 when primed and the lag is under the threshold", registry=r,
                           multiprocess_mode=state)
        self.rebuilding = Gauge("sgcache_rebuilding", "1 while a type is being rebuilt", ["entity_type"], registry=r,
                                multiprocess_mode=state)
        # Read replicas (store/replicas.py), as this process's last probe saw them.
        self.replica_lag_seconds = Gauge("sgcache_replica_lag_seconds",
                                         "seconds a read replica is behind the primary (-1: unknown)",
                                         ["replica"], registry=r, multiprocess_mode=state)
        self.replica_lag_events = Gauge("sgcache_replica_lag_events",
                                        "the leader's events a read replica lacks (-1: unknown)",
                                        ["replica"], registry=r, multiprocess_mode=state)
        self.replica_in_use = Gauge("sgcache_replica_in_use", "1 while reads go to this replica", ["replica"],
                                    registry=r, multiprocess_mode=state)
        self.upstream_calls = Counter("sgcache_upstream_requests_total", "calls to the site, by api3 method",
                                      ["method"], registry=r)
        self.upstream_errors = Counter("sgcache_upstream_errors_total", "failed calls to the site, by kind",
                                       ["kind"], registry=r)
        self.upstream_down = Gauge("sgcache_upstream_down", "1 while the site counts as down", registry=r,
                                   multiprocess_mode="livemax")
        self.sample_errors = Counter("sgcache_status_sample_errors_total", "failed state samples", registry=r)
        self.shadow = Counter("sgcache_shadow_total", "local answers asked again of the site, by result",
                              ["result"], registry=r)
        self.shadow_skipped = Counter("sgcache_shadow_skipped_total",
                                      "sampled local answers not compared, by reason", ["reason"], registry=r)
        self.coalesced = Counter("sgcache_coalesced_total", "reads answered by another caller's identical "
                                 "site call (in_flight), its answer of the last second (recent), or its "
                                 "answer from the cache (local)",
                                 ["method", "kind"], registry=r)
        for result in ("match", "lag", "mismatch"):
            self.shadow.labels(result)
        self.upstream = upstream
        self._seen_calls: dict[str, int] = {}
        self._seen_errors: dict[str, int] = {}
        self._upstream_lock = threading.Lock()
        # Running totals for the status page's request-rate plot.
        self.total = 0
        self.served = 0
        self.passed = 0
        self.recent: deque[PassthroughNote] = deque(maxlen=recent)
        self.log = logging.getLogger("sgcache.access")
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def sync_upstream(self) -> None:
        """Carry the upstream client's own call/error counts into the (multiprocess-safe) counters."""
        up = self.upstream
        if up is None:
            return
        with self._upstream_lock:
            for counts, seen, counter in ((up.calls, self._seen_calls, self.upstream_calls),
                                          (up.errors, self._seen_errors, self.upstream_errors)):
                for key, n in list(dict(counts).items()):
                    delta = n - seen.get(key, 0)
                    if delta > 0:
                        counter.labels(key).inc(delta)
                    seen[key] = n
            self.upstream_down.set(1 if getattr(up, "site_down", False) else 0)

    def exposition(self) -> bytes:
        """The text `/metrics` answers."""
        self.sync_upstream()
        return generate_latest(self.registry)

    def observe(self, method: str, outcome: str, seconds: float, *, reason: str | None = None,
                entity_type: str | None = None, auth: Mapping[str, Any] | None = None,
                status: int | None = None) -> None:
        """Count, time and log one api3 request."""
        label = passthrough_reason(reason) if outcome == "passthrough" else ""
        children = self._children.get((method, outcome, label))
        if children is None:  # labels() costs microseconds per call: keep the children
            children = self._children[(method, outcome, label)] = (
                self.requests.labels(method, outcome, label), self.latency.labels(method, outcome))
        children[0].inc()
        children[1].observe(seconds)
        self.total += 1
        if outcome == "served":
            self.served += 1
        elif outcome == "passthrough":
            self.passed += 1
            if reason and method == "read":
                self.passthrough.labels(label).inc()
                self.recent.append(PassthroughNote(time.time(), method, entity_type, reason[:300]))
        self._log(method, outcome, seconds, label, reason, entity_type, auth, status)

    def _log(self, method: str, outcome: str, seconds: float, label: str, reason: str | None,
             entity_type: str | None, auth: Mapping[str, Any] | None, status: int | None) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        caller, sudo = caller_of(auth)
        fields: dict[str, Any] = {"method": method, "entity_type": entity_type, "outcome": outcome,
                                  "ms": round(seconds * 1000, 2), "caller": caller, "sudo_as_login": sudo}
        if label:
            fields["reason"] = label
            fields["detail"] = (reason or "")[:300]
        if status is not None and status != 200:
            fields["status"] = status
        who = caller + (f" as {sudo}" if sudo else "")
        self.log.info("%s %s %s %.1fms %s%s", method, entity_type or "-", outcome, seconds * 1000, who,
                      f" ({label})" if label else "", extra={"fields": fields})


def caller_of(auth: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """(script name or user login, sudo_as_login) from api3 credentials; never secrets."""
    if not isinstance(auth, Mapping):
        return "-", None
    who = auth.get("script_name") or auth.get("user_login") or ("session" if auth.get("session_token") else "-")
    sudo = auth.get("sudo_as_login")
    return str(who)[:128], (str(sudo)[:128] if sudo else None)
