"""A full scan's plan: each type cut into id ranges (segments) with committed cursors.

Why its own module: the plan is what a killed scan leaves behind and the next run
resumes from (`_sgcache_state["scan:<kind>:<type>"]`): its shape, its JSON form and how a
type is cut are one contract, kept apart from the fetching and writing that follow it
(`scan.ParallelScan`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

#: A type is cut into id ranges of at least this many pages ...
PAGES_PER_SEGMENT = 8
#: ... and at most this many ranges per fetcher.
SEGMENTS_PER_FETCHER = 4


@dataclass
class Segment:
    """Ids in (lo, hi] of one type, active or retired; `cursor` is the last committed id."""

    return_only: str
    lo: int
    hi: int | None  # None: no upper end (rows created during the scan land here)
    cursor: int
    done: bool = False

    def to_json(self) -> list[Any]:
        return [self.return_only, self.lo, self.hi, self.cursor, self.done]

    @classmethod
    def from_json(cls, v: list[Any]) -> "Segment":
        return cls(str(v[0]), int(v[1]), None if v[2] is None else int(v[2]), int(v[3]), bool(v[4]))


@dataclass
class TypePlan:
    """One type's segments and counts, as committed (the writer alone changes them)."""

    etype: str
    segments: list[Segment]
    fields_sig: str
    version: int  # when this type's scan first started (µs): rows older than this were not seen
    total: int | None = None  # active rows the site counted when planned
    rows: int = 0  # rows committed, over every run
    earlier: int = 0  # rows committed by earlier runs
    removed: int = 0  # rows the type-done hook deleted (rebuild)
    deferred: bool = False  # its table was empty: indexes dropped, built when the type is done

    @property
    def done(self) -> bool:
        return all(s.done for s in self.segments)

    def to_json(self) -> dict[str, Any]:
        return {"segments": [s.to_json() for s in self.segments], "fields": self.fields_sig,
                "version": self.version, "total": self.total, "rows": self.rows, "removed": self.removed,
                "deferred": self.deferred}

    @classmethod
    def from_json(cls, etype: str, v: dict[str, Any]) -> "TypePlan":
        rows = int(v.get("rows") or 0)
        return cls(etype, [Segment.from_json(s) for s in v["segments"]], str(v["fields"]), int(v["version"]),
                   v.get("total"), rows, rows, int(v.get("removed") or 0), bool(v.get("deferred")))


def fields_sig(fields: list[str], filters: dict[str, Any] | None) -> str:
    """What a resumed type must still read the same way: its fields (in any order: the
    recorded schema's order may differ between processes on PostgreSQL) and filter."""
    return hashlib.sha1(repr((sorted(fields), filters)).encode()).hexdigest()[:16]


def run_key(kind: str) -> str:
    return f"scan:{kind}"


def type_key(kind: str, etype: str) -> str:
    return f"scan:{kind}:{etype}"


def split(total: int, max_id: int | None, page_size: int, concurrency: int) -> list[tuple[int, int | None]]:
    """Id ranges (lo, hi] for the active rows of a type: equal slices of 0..max_id, enough
    for the fetchers to share a big type, none smaller than PAGES_PER_SEGMENT pages."""
    n = min(total // (page_size * PAGES_PER_SEGMENT), SEGMENTS_PER_FETCHER * concurrency) if max_id else 0
    if n <= 1 or not max_id:
        return [(0, None)]
    bounds = [max_id * k // n for k in range(n)]
    return [(bounds[k], bounds[k + 1]) for k in range(n - 1)] + [(bounds[-1], None)]
