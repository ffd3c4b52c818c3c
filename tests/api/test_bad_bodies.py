"""Every malformed body gets a 4xx problem naming the field, on every route (issue 12).

Lone surrogates, nesting past 64 levels, integers past 4,300 digits, NaN/Infinity, floats that
overflow and NUL were 500s (or stored, to break PostgreSQL later); each case here is sent to a
real ``tidings serve`` whose log must show no unhandled exception afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testbed.harness import Server, cloudevent, wait_for

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BINARY = {"ce-specversion": "1.0", "ce-id": "bin-bad", "ce-source": "/pos", "ce-type": "x.y"}
PAID = {
    "order_id": "o-bad",
    "buyer_id": "buyer-bad",
    "seller_id": "seller-1",
    "amount": "1.00",
    "currency": "CNY",
}


def envelope(event_id: str, data: str = "{}") -> str:
    """A structured CloudEvent as text, with ``event_id`` and ``data`` spliced in verbatim."""
    head = '{"specversion": "1.0", "source": "/shop", "type": "x.y", "id": "'
    return head + event_id + '", "data": ' + data + "}"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded service for the module (every case is a request or two)."""
    running = Server(tmp_path_factory.mktemp("bad-bodies")).start()
    try:
        yield running
    finally:
        running.stop()
    log = running.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as opened:
        yield opened


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field, body
    return body


EVENT_CASES = [
    # (name, body, field, words in the detail)
    ("surrogate in data", envelope("s-1", '{"note": "\\ud800"}'), "/data/note", "surrogate"),
    ("surrogate in the id", envelope("\\udfff"), "/id", "surrogate"),
    ("surrogate as a key", envelope("s-2", '{"\\ud800": 1}'), "/data/\\ud800", "key"),
    ("raw surrogate bytes", None, "/", "UTF-8"),
    ("deep arrays", envelope("d-1", '{"a": ' + nested(100) + "}"), None, "64 levels"),
    ("deeper than recursion", envelope("d-2", '{"a": ' + nested(5000) + "}"), "/", "64"),
    ("huge integer", envelope("i-1", '{"n": ' + "9" * 5000 + "}"), "/data/n", "4300 digits"),
    ("NaN", envelope("n-1", '{"x": NaN}'), "/data/x", "NaN"),
    ("Infinity", envelope("n-2", '{"x": [1, -Infinity]}'), "/data/x/1", "Infinity"),
    ("overflowing float", envelope("n-3", '{"x": 1e999}'), "/data/x", "finite"),
    ("NUL in the id", envelope("a\\u0000b"), "/id", "NUL"),
    ("NUL in data", envelope("z-1", '{"x": "\\u0000"}'), "/data/x", "NUL"),
    ("not JSON", "{nope", "/", "not valid JSON"),
]


@pytest.mark.parametrize(
    ("name", "body", "field", "words"), EVENT_CASES, ids=[c[0] for c in EVENT_CASES]
)
def test_a_bad_event_body_is_a_400_naming_the_field(
    client: httpx.Client, name: str, body: str | None, field: str | None, words: str
) -> None:
    content = envelope("raw").encode() + b"\xed\xa0\x80" if body is None else body.encode()
    response = client.post("/v1/events", content=content, headers={"content-type": STRUCTURED})
    found = problem(response, 400, field)
    assert words in found["detail"], found
    if name == "deep arrays":
        assert found["field"].startswith("/data/a/0/0/0")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ('{"k": "\\ud800"}', "/k"),
        ('{"k": NaN}', "/k"),
        ('{"k": ' + nested(80) + "}", None),
        ('{"k": ' + "1" * 4301 + "}", "/k"),
    ],
    ids=["surrogate", "NaN", "deep", "huge integer"],
)
def test_binary_mode_data_is_decoded_as_strictly(
    client: httpx.Client, data: str, field: str | None
) -> None:
    response = client.post(
        "/v1/events",
        content=data.encode(),
        headers={"content-type": "application/json", **BINARY},
    )
    problem(response, 400, field)


def test_a_batch_refuses_its_bad_items_and_accepts_the_rest(client: httpx.Client) -> None:
    good = json.dumps(cloudevent("order.paid", "batch-good-1", **PAID))
    items = [
        good,
        envelope("batch-bad-surrogate", '{"x": "\\udc00"}'),
        envelope("batch-bad-nul", '{"x": "a\\u0000"}'),
        envelope("batch-bad-deep", '{"x": ' + nested(70) + "}"),
        envelope("batch-bad-\\ud800"),
    ]
    response = client.post(
        "/v1/events", content="[" + ",".join(items) + "]", headers={"content-type": BATCH}
    )
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 400, 400, 400, 400]
    assert [r["problem"]["field"] for r in results[1:]] == [
        "/1/data/x",
        "/2/data/x",
        results[3]["problem"]["field"],
        "/4/id",
    ]
    assert results[3]["problem"]["field"].startswith("/3/data/x/0/0")
    assert results[1]["id"] == "batch-bad-surrogate"
    assert results[4]["id"] is None  # the id itself is not text: not echoed
    assert client.get("/v1/events/batch-good-1").status_code == 200
    assert client.get("/v1/events/batch-bad-surrogate").status_code == 404


def test_a_batch_that_is_not_json_at_all_is_one_400(client: httpx.Client) -> None:
    for body in ("[" + envelope("x", "NaN") + "]", nested(3000), "[" + "1" * 5000 + "]"):
        problem(
            client.post("/v1/events", content=body, headers={"content-type": BATCH}),
            400,
        )


SUBSCRIBER_CASES = [
    ("PUT", "/v1/subscribers/bb-1", '{"name": "\\ud800"}', "/name"),
    ("PUT", "/v1/subscribers/bb-1", '{"attributes": {"\\ud800": 1}}', "/attributes/\\ud800"),
    ("PUT", "/v1/subscribers/bb-1", '{"attributes": {"a": NaN}}', "/attributes/a"),
    ("PUT", "/v1/subscribers/bb-1", '{"attributes": {"a": 1e400}}', "/attributes/a"),
    ("PUT", "/v1/subscribers/bb-1", '{"attributes": {"a": ' + "7" * 4400 + "}}", "/attributes/a"),
    ("PUT", "/v1/subscribers/bb-1", '{"attributes": ' + nested(2000) + "}", "/"),
    ("PUT", "/v1/subscribers/bb-1", '{"attributes": {"a": "\\u0000"}}', "/attributes/a"),
    ("PUT", "/v1/subscribers/bb-1/preferences", '{"channels": {"\\ud800": true}}', None),
    (
        "PUT",
        "/v1/subscribers/bb-1/preferences",
        '{"categories": {"\\udbff": {"enabled": false}}}',
        "/categories/\\udbff",
    ),
    ("PUT", "/v1/subscribers/bb-1/preferences", '{"channels": ' + nested(90) + "}", None),
    ("POST", "/v1/subscribers/bb-1/devices", '{"kind": "fcm", "token": "ab\\ud800cdefgh"}', None),
    ("POST", "/v1/subscribers/bb-1/webhooks", '{"url": "https://x.test/\\u0000"}', "/url"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    SUBSCRIBER_CASES,
    ids=[f"{c[1].rsplit('/', 1)[-1]}-{i}" for i, c in enumerate(SUBSCRIBER_CASES)],
)
def test_subscriber_bodies_are_decoded_as_strictly(
    client: httpx.Client, method: str, path: str, body: str, field: str | None
) -> None:
    response = client.request(
        method, path, content=body.encode(), headers={"content-type": "application/json"}
    )
    problem(response, 400, field)


def test_the_service_still_accepts_good_input_after_all_that(
    server: Server, client: httpx.Client
) -> None:
    assert client.put("/v1/subscribers/buyer-bad", json={"locale": "en-US"}).status_code in (
        200,
        201,
    )
    # an emoji escaped as a surrogate pair is fine: only lone surrogates are refused
    event = envelope("fine-1", '{"note": "\\ud83d\\ude00", "n": ' + "9" * 4300 + "}")
    response = client.post("/v1/events", content=event, headers={"content-type": STRUCTURED})
    assert response.status_code == 202, response.text
    stored = client.get("/v1/events/fine-1").json()["event"]["data"]
    assert stored["note"] == "\U0001f600"
    paid = client.post("/v1/events", json=cloudevent("order.paid", "fine-2", **PAID))
    assert paid.status_code == 202
    token = server.token("buyer-bad")
    wait_for(
        lambda: httpx.get(
            f"{server.url}/v1/inbox", headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
    )


def test_the_problem_renders_even_when_its_detail_quotes_bad_text() -> None:
    from tidings.api.problems import problem_document

    rendered = json.loads(problem_document(422, "unknown channel '\ud800'", field="/\udc00"))
    assert rendered["detail"] == "unknown channel '?'"
    assert rendered["field"] == "/?"


def test_openapi_documents_the_ingestion_bodies_and_the_problems(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    post = document["paths"]["/v1/events"]["post"]
    assert set(post["requestBody"]["content"]) == {
        "application/cloudevents+json",
        "application/json",
        "application/cloudevents-batch+json",
    }
    assert {p["name"] for p in post["parameters"]} >= {"ce-id", "ce-source", "ce-type"}
    assert {"202", "207", "400", "413", "415", "422", "503"} <= set(post["responses"])
    problem = post["responses"]["400"]["content"]["application/problem+json"]["schema"]
    assert problem["required"] == ["type", "title", "status", "detail"]
    put = document["paths"]["/v1/subscribers/{subscriber_id}"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert "attributes" in body["properties"]
    assert "application/problem+json" in put["responses"]["422"]["content"]
