"""Worlds for the fidelity tests (one per backend) and the Hypothesis settings profiles.

CI runs a bounded, reproducible number of examples; set SGCACHE_FIDELITY_EXAMPLES to run
many more, randomly, locally (e.g. SGCACHE_FIDELITY_EXAMPLES=5000).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings

from ..cache.dbs import BACKENDS, new_db_url
from .world import World, seed_generic, start_world

_LONG = int(os.environ.get("SGCACHE_FIDELITY_EXAMPLES", "0") or 0)
settings.register_profile(
    "fidelity", max_examples=_LONG or 150, deadline=None, derandomize=not _LONG, print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much])
FIDELITY = settings.get_profile("fidelity")


def examples(n: int) -> settings:
    """The fidelity profile with n examples in CI (all of SGCACHE_FIDELITY_EXAMPLES locally)."""
    return settings(FIDELITY, max_examples=_LONG or n)

SITE_SCHEMA = Path(os.environ.get("SGCACHE_SITE_SCHEMA", "/work/shared/fixtures/site-schema.json"))
#: Types of the real site schema seeded through the API (it ships without data).
SEEDED_TYPES = ["HumanUser", "Group", "Project", "Sequence", "Shot", "Asset", "Step", "Task", "Version",
                "PublishedFile", "Note", "Playlist", "CustomEntity01"]


@pytest.fixture(scope="session", params=BACKENDS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fidelity")
    for url in new_db_url(request.param, tmp):
        yield from start_world(url, tmp, demo=300)


@pytest.fixture(scope="session", params=BACKENDS)
def site_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not SITE_SCHEMA.exists():
        pytest.skip(f"real site schema fixture {SITE_SCHEMA} is absent")
    tmp = tmp_path_factory.mktemp("fidelity-site")
    for url in new_db_url(request.param, tmp):
        yield from start_world(url, tmp, "--schema", str(SITE_SCHEMA), demo=0,
                               seed_data=lambda w: seed_generic(w, SEEDED_TYPES))
