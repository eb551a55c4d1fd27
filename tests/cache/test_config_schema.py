"""Configuration layering and schema selection: what an operator sets is what runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgcache.config import load_config
from sgcache.mock.builtin_schema import build_schema
from sgcache.schema import Schema, load_rules
from tests.conftest import site_schema_fixture


def test_layers_apply_in_order_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"shotgun_url": "http://file", "port": 9001, "scan_interval": 60}))
    env = {"SGCACHE_SHOTGUN_URL": "http://env", "SGCACHE_SCRIPT_KEY": "s3cret"}
    c = load_config(cfg, env=env, overrides={"port": 9100, "data_dir": None})
    assert c.shotgun_url == "http://env"  # env beats file
    assert c.port == 9100  # flag beats file
    assert c.scan_interval == 60.0  # file beats default
    assert c.data_dir == ".sgcache"  # None flags do not override
    assert "s3cret" not in repr(c) and "s3cret" not in json.dumps(c.redacted())


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    c = load_config(env={"SGCACHE_DATA_DIR": str(tmp_path)})
    assert c.database_url == f"sqlite:///{tmp_path / 'cache.sqlite'}"


def test_unknown_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_config(env={}, overrides={"no_such_setting": 1})


def test_rules_select_types_and_fields(tmp_path: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text("# shots and their sequences\nShot.*\nSequence\n!*.image\n!*current_user*\n")
    out = build_schema().filtered(load_rules(rules))
    assert set(out.entities) == {"Shot", "Sequence"}
    assert "image" not in out["Shot"].fields and "code" in out["Shot"].fields
    assert all(f.data_type != "pivot_column" for f in out["Shot"].fields.values())


def test_real_site_schema_round_trips_verbatim() -> None:
    data = json.loads(site_schema_fixture().read_text())
    s = Schema.from_json(data)
    assert len(s.entities) == 77
    assert s.to_json() == data


def test_passwords_in_urls_never_show_in_repr_or_redacted() -> None:
    """A Config in a log line or a traceback must not carry the database's or a proxy's
    password (PostgreSQL URLs and `https://user:pass@site` set-ups both hold one)."""
    c = load_config(env={"SGCACHE_DB_URL": "postgresql://sg:dbpw1@db/sg",
                         "SGCACHE_DB_READ_URLS": "postgresql://sg:dbpw2@replica/sg",
                         "SGCACHE_SHOTGUN_URL": "https://proxy:sitepw@studio.example.com"})
    for text in (repr(c), str(c), json.dumps(c.redacted())):
        for secret in ("dbpw1", "dbpw2", "sitepw"):
            assert secret not in text
    assert "db/sg" in repr(c) and "studio.example.com" in repr(c)  # still says where
    assert c.database_url == "postgresql://sg:dbpw1@db/sg"  # the real value is untouched
