"""Fixtures for the mock site's tests: the small world served by a real process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.procs import MockProcess, running_mock

from . import world

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
       b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND"
       b"\xaeB`\x82")


@pytest.fixture(scope="session")
def world_schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("world") / "schema.json"
    world.build_schema().dump(path)
    return path


@pytest.fixture(scope="module")
def world_site(world_schema_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockProcess]:
    """The world, created through the real client, with a thumbnail on Thing 1."""
    with running_mock("--schema", str(world_schema_file), "--api-user", "tester:secret-key",
                      "--api-user", "quiet:quiet-key:noevents") as mock:
        sg = mock.sg()
        world.populate(sg.create, sg.delete)
        png = tmp_path_factory.mktemp("thumb") / "t.png"
        png.write_bytes(PNG)
        sg.upload_thumbnail("Thing", 1, str(png))
        yield mock


@pytest.fixture(scope="module")
def studio_site() -> Iterator[MockProcess]:
    """The built-in studio schema with a small demo site (events on, inverse fields)."""
    with running_mock("--demo", os.environ.get("SGCACHE_TEST_DEMO_SIZE", "300"),
                      "--api-user", "quiet:quiet-key:noevents") as mock:
        yield mock
