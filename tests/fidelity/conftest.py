"""Worlds for the fidelity tests (one per backend) and the Hypothesis settings profiles.

CI runs a bounded, reproducible number of examples; set SGCACHE_FIDELITY_EXAMPLES to run
many more, randomly, locally (e.g. SGCACHE_FIDELITY_EXAMPLES=5000).
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.conftest import site_schema_fixture

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
    site_schema = site_schema_fixture()
    tmp = tmp_path_factory.mktemp("fidelity-site")
    for url in new_db_url(request.param, tmp):
        yield from start_world(url, tmp, "--schema", str(site_schema), demo=0,
                               seed_data=lambda w: seed_generic(w, SEEDED_TYPES))
