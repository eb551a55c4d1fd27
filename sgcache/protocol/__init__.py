"""The api3 wire and nothing more: faults and their messages, value encodings, the JSON codec.

Shared by the mock site and the cache so both word every message and encode every value
alike. Query semantics (filters, deep paths, grouping, link names) are *not* here: each
side implements them on its own (`sgcache.read`, `sgcache.mock`), so each checks the other.
"""

from .errors import AuthenticationFault, Fault, error_body

__all__ = ["Fault", "AuthenticationFault", "error_body"]
