"""sgcache: a site-local, read-through cache for the ShotGrid api3 protocol."""

__version__ = "0.1.0"
