"""Everything about the api3 wire protocol: errors, value encodings, filter shapes.

Kept in one package so the mock site and the cache agree on every message and shape.
"""

from .errors import AuthenticationFault, Fault, error_body

__all__ = ["Fault", "AuthenticationFault", "error_body"]
