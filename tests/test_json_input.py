"""The strict JSON decoder: what it refuses, where it says the fault is, what it lets through."""

from __future__ import annotations

import json

import pytest

from tidings.errors import InvalidInput
from tidings.json_input import MAX_DEPTH, decode, decode_batch


def refused(body: str | bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        decode(body)
    assert caught.value.status == 400
    return caught.value


def nest(depth: int) -> str:
    return "[" * (depth - 1) + "{}" + "]" * (depth - 1)


def test_nesting_up_to_the_limit_is_fine_one_more_is_not() -> None:
    assert decode(nest(MAX_DEPTH))
    deep = refused('{"a": ' + nest(MAX_DEPTH) + "}")
    assert deep.field == "/a" + "/0" * (MAX_DEPTH - 1)  # the 65th container
    assert f"{MAX_DEPTH} levels" in str(deep)
    assert refused(nest(100_000)).field == "/"  # past the scanner's recursion: no pointer


def test_numbers_python_reads_but_json_has_not() -> None:
    assert decode('{"n": ' + "9" * 4300 + "}")["n"] == int("9" * 4300)
    assert refused('{"n": ' + "9" * 4301 + "}").field == "/n"
    assert refused('{"a": [0, -' + "1" * 5000 + "]}").field == "/a/1"
    for literal in ("NaN", "Infinity", "-Infinity", "1e400", "-2.5e999"):
        assert refused('{"x": {"y": ' + literal + "}}").field == "/x/y", literal
    assert decode("[1e308, -0.0, 5e-400]") == [1e308, -0.0, 0.0]


def test_text_every_store_keeps() -> None:
    assert decode(b'"\\ud83d\\ude00 \\u4e2d"') == "\U0001f600 \u4e2d"  # a pair is one character
    assert refused(b'"\xed\xa0\x80"').field == "/"  # encoded surrogate bytes: not UTF-8
    assert refused(b"\xff").field == "/"
    assert refused('{"a": ["x", "\\udc00"]}').field == "/a/1"
    assert refused('{"a": "\\u0000"}').field == "/a"
    key = refused('{"a/b~": {"\\ud800": 1}}')
    assert key.field == "/a~1b~0/\\ud800"  # RFC 6901 escapes; the bad key shown, not raw
    assert "key" in str(key)
    json.dumps({"field": key.field}).encode()  # the pointer itself encodes


def test_a_batch_refuses_items_not_the_body() -> None:
    body = json.dumps([{"id": "a"}, {"id": "\ud800"}, [[[1]]], {"d": json.loads(nest(70))}])
    items, bad = decode_batch(body)
    assert len(items) == 4
    assert {index: error.field for index, error in bad.items()} == {1: "/1/id", 3: bad[3].field}
    assert bad[3].field is not None and bad[3].field.startswith("/3/d/0")
    assert decode_batch(b"[]") == ([], {})
    with pytest.raises(InvalidInput):
        decode_batch(b'{"not": "a batch", "x": NaN}')
