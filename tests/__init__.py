"""sgcache test suite (a package so `tests.support` is importable)."""
