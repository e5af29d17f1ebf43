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


# --- loads through orjson: the same results as json.loads, or json decides ---------------------


def typed(value: Any) -> str:
    """``value`` written out so that 1, 1.0 and True differ, NaN equals NaN and key order counts
    (deepjson.dumps: json.dumps's text at any depth, tested above)."""
    return deepjson.dumps(value)


def json_result(data: bytes | str) -> str:
    """What json.loads makes of ``data`` (its loop parser past the recursion limit), typed, or
    the error's type and message."""
    try:
        try:
            return typed(json.loads(data))
        except RecursionError:
            text = data.decode(json.detect_encoding(data)) if isinstance(data, bytes) else data
            return typed(deepjson._parse(text))
    except ValueError as exc:
        return f"{type(exc).__name__}: {exc}"


def deepjson_result(data: bytes | str) -> str:
    try:
        return typed(deepjson.loads(data))
    except ValueError as exc:
        return f"{type(exc).__name__}: {exc}"


ORJSON_DIFFERS = [
    pytest.param(b"[" * 1025 + b"]" * 1025, id="nesting past orjson's 1024"),
    pytest.param(b'{"a":' * 1100 + b"1" + b"}" * 1100, id="objects past orjson's 1024"),
    pytest.param(b'"\\ud800"', id="lone high surrogate escaped"),
    pytest.param(b'"\\udc00\\ud800"', id="surrogates in the wrong order"),
    pytest.param(b'{"\\udfff": 1}', id="lone surrogate in a key"),
    pytest.param(b'"\xed\xa0\x80"', id="surrogate encoded in UTF-8"),
    pytest.param('"\ud800"', id="str holding a lone surrogate"),
    pytest.param(b"NaN", id="NaN"),
    pytest.param(b"[Infinity, -Infinity]", id="Infinity"),
    pytest.param(b"1e400", id="double overflow to inf"),
    pytest.param(b"-1.7976931348623159e308", id="just past the largest double"),
    pytest.param(b"18446744073709551616", id="2**64"),
    pytest.param(b"-9223372036854775809", id="below int64"),
    pytest.param(b'{"n": 123456789012345678901234567890}', id="a 30-digit int"),
    pytest.param(b"18446744073709551615", id="2**64 - 1"),
    pytest.param(b"-9223372036854775808", id="int64 min"),
    pytest.param(b"9999999999999999999", id="19 nines"),
    pytest.param(b'{"a": 1, "b": 2, "a": 3}', id="duplicate keys"),
    pytest.param(b'\xef\xbb\xbf{"a": 1}', id="UTF-8 BOM"),
    pytest.param('{"a": [1, 2]}'.encode("utf-16"), id="UTF-16"),
    pytest.param(b'"\xff"', id="invalid UTF-8"),
    pytest.param(b'"a\x01b"', id="control character in a string"),
    pytest.param(b"[1,]", id="trailing comma"),
    pytest.param(b"-0", id="minus zero int"),
    pytest.param(b"[-0.0, 1E2, 4.9e-324, 1e-400, 0.1]", id="floats at the edges"),
    pytest.param(b"", id="empty"),
    pytest.param(b" \t\n\r[1] \n", id="whitespace"),
    pytest.param(b"\x0c1", id="form feed is not whitespace"),
]


@pytest.mark.parametrize("data", ORJSON_DIFFERS)
def test_loads_agrees_with_json_where_orjson_differs(data: bytes | str) -> None:
    """Inputs orjson refuses or reads otherwise than json: loads gives json's value (type,
    key order) or json's error."""
    assert deepjson_result(data) == json_result(data)


@settings(max_examples=300)
@given(value=json_values, ascii_only=st.booleans())
def test_loads_agrees_with_json_loads(value: Any, ascii_only: bool) -> None:
    """Any value json writes, as bytes or str, loads as json.loads reads it, types and all."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert deepjson_result(text) == json_result(text)
    data = text.encode("utf-8", "surrogatepass")
    assert deepjson_result(data) == json_result(data)
