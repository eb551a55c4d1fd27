"""Shared pytest setup: make `tests.support` importable from every test package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Shadow verification re-asks the site for a sample of local answers (default 1%): the
# tests that count the site's requests would then flake. Processes the tests start
# inherit this; the shadow tests set their own rate.
os.environ.setdefault("SGCACHE_SHADOW_RATE", "0")
# Likewise the thumbnail fetcher reads the site in the background; the browse tests turn it on.
os.environ.setdefault("SGCACHE_THUMBNAIL_CACHE_MB", "0")
# Coalesced passthrough reuses an answer for a second after it arrives: tests that repeat a
# passed-through read and count the site's requests expect each to reach it. Calls in
# flight are still shared; tests/e2e/test_coalesce.py sets its own window.
os.environ.setdefault("SGCACHE_COALESCE_WINDOW", "0")


#: The real site's schema dump, kept beside the checkout in ../shared/fixtures (not in it:
#: it is the site's data); SGCACHE_SITE_SCHEMA points elsewhere.
SITE_SCHEMA = Path(os.environ.get("SGCACHE_SITE_SCHEMA") or
                   Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "site-schema.json")


def fixtures_required() -> bool:
    """CI sets these: a missing fixture must fail there, not quietly skip every test using it."""
    return os.environ.get("SGCACHE_REQUIRE_FIXTURES") == "1" or os.environ.get("CI", "").lower() == "true"


def site_schema_fixture() -> Path:
    """The real site schema's path; skips when it is absent locally, fails when required."""
    if SITE_SCHEMA.exists():
        return SITE_SCHEMA
    if fixtures_required():
        pytest.fail(f"the real site schema fixture is required (CI or SGCACHE_REQUIRE_FIXTURES=1) "
                    f"but missing: {SITE_SCHEMA}")
    pytest.skip(f"real site schema fixture not present at {SITE_SCHEMA}")
