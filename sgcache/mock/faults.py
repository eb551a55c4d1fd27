"""Fault injection settings and request statistics, both driven from the admin port.

Transport faults (latency, HTTP 502/503/504, dropped connections, outages) are
applied by the server's outermost ASGI layer to every request on the public
port; commit faults (late or never-visible event ids) live in ``CommitFaults``
and are applied by the event log as rows are written.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .events import CommitFaults

HTTP_ERRORS = (502, 503, 504)


@dataclass
class FaultConfig:
    latency: float = 0.0          # seconds added before every request is handled (awaited: requests overlap)
    error_rate: float = 0.0       # share of requests answered with HTTP 502/503/504
    error_codes: tuple[int, ...] = HTTP_ERRORS
    drop_rate: float = 0.0        # share of requests whose connection is closed unanswered
    outage_until: float = 0.0     # monotonic time until which everything gets 503
    commit: CommitFaults = field(default_factory=CommitFaults)
    rng: random.Random = field(default_factory=random.Random)

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "error_rate": self.error_rate,
            "error_codes": list(self.error_codes),
            "drop_rate": self.drop_rate,
            "outage": max(0.0, self.outage_until - time.monotonic()),
            "event_delay": self.commit.event_delay,
            "event_delay_rate": self.commit.event_delay_rate,
            "event_gap_rate": self.commit.event_gap_rate,
        }

    def update(self, data: dict[str, Any]) -> None:
        """Apply settings from the admin endpoint; unknown keys raise ValueError.

        ``outage`` is a duration in seconds from now (0 ends an outage);
        ``seed`` reseeds the random choices so tests are repeatable;
        ``reset: true`` first returns everything to "no faults".
        """
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if data.get("reset"):
            self.latency = self.error_rate = self.drop_rate = 0.0
            self.outage_until = 0.0
            self.error_codes = HTTP_ERRORS
            self.commit.event_delay = self.commit.event_delay_rate = self.commit.event_gap_rate = 0.0
        rates = ("error_rate", "drop_rate", "event_delay_rate", "event_gap_rate")
        for key, value in data.items():
            if key == "reset":
                continue
            if key == "seed":
                self.rng.seed(value)
                self.commit.rng.seed(value)
            elif key == "error_codes":
                codes = tuple(int(c) for c in value)
                if not codes or any(c < 300 or c > 599 for c in codes):
                    raise ValueError("error_codes must be HTTP statuses >= 300")
                self.error_codes = codes
            elif key == "outage":
                self.outage_until = time.monotonic() + float(value) if float(value) > 0 else 0.0
            elif key in ("latency", "event_delay") or key in rates:
                v = float(value)
                if v < 0 or (key in rates and v > 1):
                    raise ValueError(f"{key} out of range: {value!r}")
                if key.startswith("event_"):
                    setattr(self.commit, key, v)
                else:
                    setattr(self, key, v)
            else:
                raise ValueError(f"unknown fault setting {key!r}")

    def in_outage(self) -> bool:
        return self.outage_until > time.monotonic()

    def pick(self) -> str | int | None:
        """What to do to one request: None, "drop", or an HTTP status."""
        if self.in_outage():
            return 503
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return "drop"
        if self.error_rate and self.rng.random() < self.error_rate:
            return self.rng.choice(self.error_codes)
        return None


class Stats:
    """Requests that reached the site, by RPC method (or endpoint), and injected faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.since = time.time()

    def count(self, label: str) -> None:
        with self._lock:
            self.requests[label] += 1

    def inject(self, what: str) -> None:
        with self._lock:
            self.injected[what] += 1

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.injected.clear()
            self.since = time.time()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "total": sum(self.requests.values()),
                    "injected": dict(self.injected), "since": self.since}
