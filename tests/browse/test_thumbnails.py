"""Local thumbnails: kept once per content, capped with the least recently shown evicted
first, and following the site when an image changes or is cleared."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sgcache.serve.thumbnails import ThumbnailStore, source_key

from .conftest import ADMIN, World, png, sign_in, wait_for


def test_the_same_image_is_kept_once_whoever_shows_it(tmp_path: Path) -> None:
    store = ThumbnailStore(tmp_path, cap_bytes=1_000_000)
    data = png(16, 9)
    store.put("Shot", 1, "image", "https://s3.example/a.png", data, "image/png")
    store.put("Version", 7, "image", "https://s3.example/a.png", data, "image/png")
    blobs = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path]
    assert len(blobs) == 1 and blobs[0].read_bytes() == data
    a, b = store.get("Shot", 1), store.get("Version", 7)
    assert a is not None and b is not None and a.path == b.path and a.content_type == "image/png"
    assert store.size() == len(data)


def test_past_the_cap_the_least_recently_shown_go_first(tmp_path: Path) -> None:
    images = {i: png(8 + i, 8) for i in range(1, 5)}
    store = ThumbnailStore(tmp_path, cap_bytes=sum(len(v) for v in images.values()) - 1)
    for i in (1, 2, 3):
        store.put("Shot", i, "image", f"https://s3.example/{i}", images[i], "image/png")
    store.get("Shot", 1)  # shown just now: 2 is now the least recently shown
    store.put("Shot", 4, "image", "https://s3.example/4", images[4], "image/png")
    assert store.get("Shot", 2) is None
    assert all(store.get("Shot", i) is not None for i in (1, 3, 4))
    assert store.size() <= store.cap_bytes


def test_a_re_signed_url_is_the_same_image() -> None:
    assert source_key("https://s3.example/x/t.jpg?X-Amz-Signature=1&X-Amz-Expires=60") == \
        source_key("https://s3.example/x/t.jpg?X-Amz-Signature=2")


def test_a_changed_or_cleared_image_on_the_site_is_followed(world: World, tmp_path: Path) -> None:
    sg = world.site.sg()
    shot = sg.find_one("Shot", [["id", "is_not", world.shot_id], ["image", "is", None]], ["code"])
    if shot is None:
        pytest.skip("no Shot without a thumbnail in the demo")
    s = sign_in(world.cache.url, *ADMIN)
    path = f"/browse/thumb/Shot/{shot['id']}"
    assert s.get(path).status_code == 404
    for size in ((64, 36), (96, 54)):  # a new thumbnail, then a replacement
        img = png(*size)
        (tmp_path / "t.png").write_bytes(img)
        sg.upload_thumbnail("Shot", shot["id"], str(tmp_path / "t.png"))
        wait_for(lambda img=img: s.get(path).content == img, f"the {size} thumbnail's local copy")
        assert f'src="{path}"' in s.get(f"/browse/Shot/{shot['id']}").text
    sg.update("Shot", shot["id"], {"image": None})
    wait_for(lambda: s.get(path).status_code == 404, "the cleared thumbnail to be forgotten")


def test_one_fetcher_per_data_dir_and_another_takes_over(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sgcache.serve.thumbnails import ThumbnailFetcher
    service: Any = SimpleNamespace(upstream=SimpleNamespace(base_url="http://127.0.0.1:9"))
    store = ThumbnailStore(tmp_path, cap_bytes=1000)
    first, second = (ThumbnailFetcher(service, store, interval=1) for _ in range(2))
    assert first.should_run() and not second.should_run()  # two server workers of one host
    assert first.should_run()  # it keeps it
    os.close(first._lock_fd)  # type: ignore[arg-type]  # the first worker exits
    first._lock_fd = None
    assert second.should_run()
