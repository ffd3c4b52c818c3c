"""JSON going out: orjson's speed, :mod:`json`'s output and errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tidings import json_output


def _stdlib(value: Any, default: Any = None) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)


@pytest.mark.parametrize(
    "value",
    [
        {"order_id": "o-1", "amount": "99.00", "title": "订单已支付 ✓", "n": [1, 2.5, None, True]},
        {"nested": {"deep": [{"x": -0.1}, {"y": 1e16}]}, "empty": {}, "list": []},
        {1: "int key", "s": 'tab\tand "quotes" and \\'},
        [10**30, -(10**40)],  # beyond 64 bits: json encodes it
        "plain",
    ],
)
def test_output_decodes_to_what_json_would_give(value: Any) -> None:
    encoded = json_output.utf8(value)
    assert json.loads(encoded) == json.loads(_stdlib(value))
    assert json_output.text(value) == encoded.decode()


def test_large_integers_keep_every_digit() -> None:
    digits = "9" * 400
    assert json_output.text({"n": int(digits)}) == '{"n":' + digits + "}"


def test_datetimes_go_to_default_as_they_did() -> None:
    when = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
    assert json_output.text({"at": when}, default=str) == _stdlib({"at": when}, default=str)
    with pytest.raises(TypeError):
        json_output.text({"at": when})


def test_lone_surrogate_fails_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        json_output.utf8({"bad": "\ud800"})
    assert json_output.text({"bad": "\ud800"}) == _stdlib({"bad": "\ud800"})
