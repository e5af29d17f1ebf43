"""relay.deepjson: json's results at any depth, where json's own recursion gives out."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import deepjson

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(codec=None)),  # lone surrogates included
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON: NaN equals NaN."""
    return json.dumps(a) == json.dumps(b)


@settings(max_examples=300)
@given(value=json_values, indent=st.sampled_from([None, 2]))
def test_parse_agrees_with_json_loads(value: Any, indent: int | None) -> None:
    """The loop parser reads every text json.dumps writes (pretty or compact) as json.loads does."""
    text = json.dumps(value, indent=indent)
    assert same(deepjson._parse(text), json.loads(text))


@settings(max_examples=300)
@given(value=json_values)
def test_encode_agrees_with_json_dumps(value: Any) -> None:
    """The loop encoder writes what json.dumps writes, compact and ASCII."""
    assert deepjson._encode(value) == json.dumps(value, separators=(",", ":"))


@settings(max_examples=300)
@given(text=st.text(alphabet='[]{}":,0123456789.eE+-truefalsnNIiy \n\\u'))
def test_what_json_refuses_is_refused_the_same_way(text: str) -> None:
    """Arbitrary near-JSON text: the loop parser accepts exactly what json.loads accepts, with the
    same value, and refuses the rest with a ValueError."""
    try:
        expected: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError, match=r"\w"):
            deepjson._parse(text)
        return
    assert same(deepjson._parse(text), expected)


@pytest.mark.parametrize("levels", [990, 5_000, 500_000])
def test_any_depth_round_trips(levels: int) -> None:
    """Arrays and objects nested far past json's recursion limit load and dump, unchanged."""
    text = '{"a":' * (levels // 2) + '[1,"x"]' + "}" * (levels // 2)
    text = "[" * (levels - levels // 2) + text + "]" * (levels - levels // 2)
    value = deepjson.loads(text.encode())
    assert deepjson.dumps(value) == text


def test_loads_bytes_as_json_does() -> None:
    """Bytes are decoded as json.loads decodes them (UTF-8 with or without BOM, UTF-16), also
    when the loop parser is needed; NaN and Infinity are read as json reads them."""
    deep = "[" * 5000 + '"\u00e9", NaN, -Infinity' + "]" * 5000
    for data in (deep.encode(), deep.encode("utf-8-sig"), deep.encode("utf-16")):
        value = deepjson.loads(data)
        for _ in range(4999):
            value = value[0]
        assert value[0] == "\u00e9"
        assert math.isnan(value[1])
        assert value[2] == -math.inf
    with pytest.raises(ValueError, match="Unexpected UTF-8 BOM"):
        deepjson.loads("\ufeff" + deep)
    with pytest.raises(ValueError, match="Expecting ',' delimiter"):
        deepjson.loads(("[" * 5000 + "1 2" + "]" * 5000).encode())
