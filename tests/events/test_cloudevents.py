"""CloudEvents parsing: every mode, and every malformed envelope names its field."""

from __future__ import annotations

import pytest

from tidings.errors import InvalidInput
from tidings.events.cloudevents import parse_batch, parse_binary, parse_structured


def envelope(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "specversion": "1.0",
        "id": "e1",
        "source": "/shop",
        "type": "order.paid",
        "data": {"order_id": "o1"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_structured_keeps_every_attribute() -> None:
    event = parse_structured(
        envelope(subject="o1", time="2026-01-01T08:00:00+08:00", traceid="abc")
    )
    assert (event.id, event.source, event.type, event.subject) == (
        "e1",
        "/shop",
        "order.paid",
        "o1",
    )
    assert event.time == 1767225600.0
    assert event.extensions == {"traceid": "abc"}
    assert event.envelope()["traceid"] == "abc"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": None}, "/id"),
        ({"source": ""}, "/source"),
        ({"type": 5}, "/type"),
        ({"specversion": "0.3"}, "/specversion"),
        ({"data": [1, 2]}, "/data"),
        ({"time": "yesterday"}, "/time"),
        ({"time": "2026-01-01T00:00:00"}, "/time"),
        ({"datacontenttype": "text/xml"}, "/datacontenttype"),
        ({"data_base64": "AAAA"}, "/data_base64"),
        ({"Bad-Name": 1}, "/Bad-Name"),
    ],
)
def test_structured_errors_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_structured(envelope(**overrides))
    assert caught.value.field == field


def test_not_an_object() -> None:
    with pytest.raises(InvalidInput):
        parse_structured([1])


def test_binary_mode_reads_ce_headers() -> None:
    event = parse_binary(
        {
            "ce-specversion": "1.0",
            "ce-id": "b1",
            "ce-source": "/pos",
            "ce-type": "order.created",
            "ce-subject": "o9",
            "content-type": "application/json",
        },
        {"order_id": "o9"},
    )
    assert (event.id, event.source, event.subject, event.data) == (
        "b1",
        "/pos",
        "o9",
        {"order_id": "o9"},
    )


def test_batch_reports_each_item_in_order() -> None:
    results = parse_batch([envelope(), envelope(id=None), "nope"])
    assert not isinstance(results[0], InvalidInput)
    assert isinstance(results[1], InvalidInput) and results[1].field == "/1/id"
    assert isinstance(results[2], InvalidInput) and results[2].field == "/2"


def test_batch_limit() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_batch([envelope(id=str(i)) for i in range(1001)])
    assert caught.value.status == 413
