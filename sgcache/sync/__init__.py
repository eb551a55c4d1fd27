"""Keeping the store equal to the site: scans, the event log, write-through, schema changes.

`scan` (full scans, keyset paged), `interval_scan` (what changed by `updated_at`, the
retired set), `events` (the EventLogEntry watcher: an event becomes a refresh of the
entities it names), `refresh` (the one versioned path that re-reads entities and writes
rows), `loop` (the leader's loop and write-through), `schema_changes`, `leader` (one
writer), `rebuild`, `validate`, `control` (the `sgcache ctrl` socket).

May import: `runtime`, `read`, `store`, `upstream`, the wire. Never `serve` or `cli`.
"""
