"""The fast JSON codec must decode every body to exactly what the standard library gives."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgcache.protocol import jsoncodec

scalars = (st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def same(a: Any, b: Any) -> bool:
    """Equal, with types (True is not 1) and -0.0 told apart from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(values)
def test_decodes_like_the_standard_library(value: Any) -> None:
    for body in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        try:
            expected = json.loads(body)
        except ValueError:
            with pytest.raises(ValueError):
                jsoncodec.loads(body)
            continue
        assert same(jsoncodec.loads(body), expected)


@settings(max_examples=300, deadline=None)
@given(values)
def test_encodes_values_that_read_back_unchanged(value: Any) -> None:
    try:
        body = jsoncodec.dumps(value)
    except UnicodeEncodeError:  # lone surrogates: not UTF-8 at all, as with the standard library
        with pytest.raises(UnicodeEncodeError):
            json.dumps(value, ensure_ascii=False).encode()
        return
    assert same(json.loads(body), value)


def test_integers_past_64_bits_stay_integers() -> None:
    assert jsoncodec.loads(b'{"id": 123456789012345678901234567890}') == {"id": 123456789012345678901234567890}
    assert jsoncodec.dumps(2 ** 70) == b"1180591620717411303424"


def test_nan_is_accepted_from_the_site_and_refused_from_callers() -> None:
    assert math.isnan(jsoncodec.loads(b"[NaN]")[0])
    with pytest.raises(ValueError):
        jsoncodec.loads(b"[NaN]", allow_constants=False)
