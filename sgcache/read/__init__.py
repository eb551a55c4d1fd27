"""The read engine: answer api3 `read` and `summarize` from the store exactly, or pass through.

`engine` (a read -> one SQL query; plans; paging), `relations` (the operator registry:
(storage class, relation) -> SQL condition, e.g. `contains` on text), `summarize`,
`point_reads` (reads by id without a worker thread), `note_threads` and `text_search`
(`note_thread_contents` and `query_display_name_cache` where exact, `local_rpcs` naming
them by method, `site_fields` saying which fields the site lacks), `support` (the docs table read off the registry),
`passthrough` (the signal "ask the site").

May import: `store`, the wire, `sgcache.schema`. Never `sync`, `serve` or the mock.
"""
