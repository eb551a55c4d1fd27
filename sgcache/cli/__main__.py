"""`python -m sgcache.cli`: the same command as `sgcache`."""

from . import main

main()
