"""Helpers shared by every test package: running the mock site (and later the cache) as real processes."""
