"""The preference centre (SPEC §11): a subscriber reads and changes its own preferences
with its inbox token; a required category cannot be switched off (409 naming it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from testbed.harness import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("preferences")).start()
    try:
        yield running
    finally:
        running.stop()


def test_a_subscriber_changes_its_own_preferences_and_the_api_reports_them(
    server: Server,
) -> None:
    buyer, other = f"buyer-{uuid.uuid4().hex[:6]}", f"buyer-{uuid.uuid4().hex[:6]}"
    with server.client() as api:
        assert api.put(f"/v1/subscribers/{buyer}", json={"locale": "en-US"}).status_code in (
            200,
            201,
        )
    auth = {"Authorization": f"Bearer {server.token(buyer)}"}
    url = f"{server.url}/v1/inbox/preferences"
    assert httpx.get(url, headers=auth).json() == {}
    document = {
        "channels": {"sms": False},
        "categories": {
            "marketing": {"enabled": False},
            "order_updates": {"channels": {"email": False}},
        },
        "quiet_hours": {"start": "22:00", "end": "08:00"},
    }
    put = httpx.put(url, headers=auth, json=document)
    assert put.status_code == 200, put.text
    assert httpx.get(url, headers=auth).json() == document
    with server.client() as api:
        assert api.get(f"/v1/subscribers/{buyer}/preferences").json() == document
        # another subscriber's are untouched
        assert api.get(f"/v1/subscribers/{other}/preferences").status_code == 404


def test_a_required_category_cannot_be_switched_off(server: Server) -> None:
    auth = {"Authorization": f"Bearer {server.token('buyer-req')}"}
    answer = httpx.put(
        f"{server.url}/v1/inbox/preferences",
        headers=auth,
        json={"categories": {"order_updates": {"enabled": False}}},
    )
    assert answer.status_code == 409
    assert answer.headers["content-type"] == "application/problem+json"
    assert "order_updates" in answer.json()["detail"]
    assert answer.json()["field"] == "/categories/order_updates"


@pytest.mark.parametrize(
    "body",
    [{"categories": {"nope": {"enabled": False}}}, {"channels": {"email": "no"}}, [], {"x": 1}],
)
def test_a_bad_document_is_a_problem(server: Server, body: object) -> None:
    auth = {"Authorization": f"Bearer {server.token('buyer-bad')}"}
    answer = httpx.put(f"{server.url}/v1/inbox/preferences", headers=auth, json=body)
    assert answer.status_code in (400, 422)
    assert answer.headers["content-type"] == "application/problem+json"


def test_without_a_valid_token_nothing_is_read_or_changed(server: Server) -> None:
    url = f"{server.url}/v1/inbox/preferences"
    assert httpx.get(url).status_code == 401
    assert (
        httpx.put(url, json={}, headers={"Authorization": "Bearer not.a.token"}).status_code == 401
    )
    with server.client() as api:  # an API key is not an inbox token
        assert api.get("/v1/inbox/preferences").status_code == 401


def test_the_categories_a_preference_centre_offers(server: Server) -> None:
    auth = {"Authorization": f"Bearer {server.token('buyer-cat')}"}
    answer = httpx.get(f"{server.url}/v1/inbox/categories", headers=auth)
    assert answer.status_code == 200
    found = {item["key"]: item for item in answer.json()["items"]}
    assert found["order_updates"]["required"] is True
    assert found["marketing"]["required"] is False
    assert "inapp" in answer.json()["channels"]
