"""The store: SQL tables that hold the cached copy of the site, and the schema it was built for.

`field_types` (one class per ShotGrid data type: columns, wire <-> row conversion) and
`tables` (`Store`: one table per entity type, association tables for multi-entity
fields, the recorded schema and sync state in `_sgcache_*` tables, bulk versioned upserts).

May import: the wire (`sgcache.protocol`), `sgcache.schema`. Nothing above it.
"""
