"""Inbox tokens (SPEC §11, issue 12): minted by the API, capped by ``inbox.max_ttl``, and
live streams that end with their token and are bounded per subscriber."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import jwt
import pytest

from testbed.harness import Server, wait_for
from tidings.api.inbox import mint_token

EVENTS_KEY = "events-only-key-0123456789abcdef"
TOKENS_KEY = "tokens-only-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {"inbox": {"max_ttl": "1h", "max_streams": 2}}
    running = Server(tmp_path_factory.mktemp("inbox-tokens"), config=config)
    running.env["TIDINGS_API_KEYS"] += f",{EVENTS_KEY}:events,{TOKENS_KEY}:tokens"
    running.start()
    try:
        yield running
    finally:
        running.stop()


def subscriber() -> str:
    return f"buyer-{uuid.uuid4().hex[:8]}"


def claims(server: Server, token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(
        token, server.env["TIDINGS_INBOX_SECRET"], algorithms=["HS256"]
    )
    return decoded


def test_the_api_mints_a_token_the_inbox_accepts(server: Server) -> None:
    buyer = subscriber()
    with server.client() as api:
        answer = api.post(f"/v1/subscribers/{buyer}/inbox-token", json={"ttl": "30m"})
        assert answer.status_code == 200, answer.text
        minted = answer.json()
        default = api.post(f"/v1/subscribers/{buyer}/inbox-token")  # no body: 1 h
        assert default.status_code == 200, default.text
    token = minted["token"]
    found = claims(server, token)
    assert found["sub"] == buyer
    assert found["exp"] - found["iat"] == 1800  # type: ignore[operator]
    assert minted["expires_at"].endswith("Z")
    assert claims(server, default.json()["token"])["exp"] - found["iat"] >= 3600  # type: ignore[operator]
    count = httpx.get(f"{server.url}/v1/inbox/count", headers={"Authorization": f"Bearer {token}"})
    assert count.status_code == 200
    assert count.json() == {"unread": 0, "unseen": 0}


@pytest.mark.parametrize(
    ("key", "status"), [(None, 401), ("not-a-key-0123456789abcdef", 401), (EVENTS_KEY, 403)]
)
def test_minting_needs_the_tokens_scope(server: Server, key: str | None, status: int) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(f"{server.url}/v1/subscribers/b-1/inbox-token", headers=headers, json={})
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_tokens_key_mints_and_does_nothing_else(server: Server) -> None:
    with server.client(TOKENS_KEY) as shop:
        minted = shop.post("/v1/subscribers/b-2/inbox-token", json={"ttl": 600})
        assert minted.status_code == 200, minted.text
        assert claims(server, minted.json()["token"])["sub"] == "b-2"
        assert shop.get("/v1/subscribers/b-2").status_code == 403
        assert shop.put("/v1/subscribers/b-2/preferences", json={}).status_code == 403


@pytest.mark.parametrize(
    "body", [{"ttl": "soon"}, {"ttl": -5}, {"ttl": 0}, {"ttl": True}, {"lifetime": 60}, []]
)
def test_a_bad_ttl_is_a_problem_naming_it(server: Server, body: object) -> None:
    with server.client() as api:
        answer = api.post("/v1/subscribers/b-1/inbox-token", json=body)
    assert answer.status_code in (400, 422), answer.text
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("raw", [b'{"ttl": NaN}', b'{"ttl": Infinity}', b'{"ttl": 1e999}'])
def test_a_ttl_that_is_no_number_is_a_problem(server: Server, raw: bytes) -> None:
    with server.client() as api:
        answer = api.post(
            "/v1/subscribers/b-1/inbox-token",
            content=raw,
            headers={"content-type": "application/json"},
        )
    assert answer.status_code in (400, 422), answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_max_ttl_caps_every_token(server: Server) -> None:
    buyer = subscriber()
    with server.client() as api:
        minted = api.post(f"/v1/subscribers/{buyer}/inbox-token", json={"ttl": "48h"}).json()
    found = claims(server, minted["token"])
    assert found["exp"] - found["iat"] == 3600  # type: ignore[operator]
    from_cli = claims(server, server.cli_token(buyer, ttl="48h"))
    assert from_cli["exp"] - from_cli["iat"] == 3600  # type: ignore[operator]

    # a token signed elsewhere (the shop's own code) that lives longer is refused
    secret = server.env["TIDINGS_INBOX_SECRET"]
    now = time.time()
    for token in (
        mint_token(secret, buyer, 2 * 3600, now),
        jwt.encode({"sub": buyer, "exp": int(now + 2 * 3600)}, secret, algorithm="HS256"),
    ):
        answer = httpx.get(f"{server.url}/v1/inbox", params={"token": token})
        assert answer.status_code == 401
        assert "max_ttl" in answer.json()["detail"]
    ok = mint_token(secret, buyer, 3000, now)
    assert httpx.get(f"{server.url}/v1/inbox", params={"token": ok}).status_code == 200


def test_a_stream_ends_when_its_token_expires(server: Server) -> None:
    token = server.token(subscriber(), ttl=2)
    seen: list[str] = []
    # without the expiry the stream would run on (a keep-alive every 15 s): the read times out
    with httpx.stream(
        "GET", f"{server.url}/v1/inbox/stream", params={"token": token}, timeout=10
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            seen.append(line)
    assert seen[0] == "event: count"
    assert "event: expired" in seen
    # and the expired token opens no new one
    again = httpx.get(f"{server.url}/v1/inbox/stream", params={"token": token}, timeout=10)
    assert again.status_code == 401


def open_stream(stack: ExitStack, server: Server, token: str) -> httpx.Response:
    """Open a stream (held by ``stack``); a 200 one is read up to its first event."""
    response = stack.enter_context(
        httpx.stream("GET", f"{server.url}/v1/inbox/stream", params={"token": token}, timeout=10)
    )
    if response.status_code == 200:
        lines = response.iter_lines()
        next(lines)  # the first count: the stream is registered
        # keep the iterator: dropping it half-read closes the connection
        stack.callback(lines.close)
    else:
        response.read()
    return response


def test_streams_per_subscriber_are_capped_and_closed_ones_are_released(server: Server) -> None:
    buyer = subscriber()
    token = server.token(buyer)
    other = server.token(subscriber())
    for _ in range(3):  # open and close more than the cap, several times
        with ExitStack() as stack:
            first, second = open_stream(stack, server, token), open_stream(stack, server, token)
            assert first.status_code == second.status_code == 200
            refused = open_stream(stack, server, token)
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert "Retry-After" in refused.headers
            assert open_stream(stack, server, other).status_code == 200  # another subscriber's own
        # closed by the client: the server lets go of them, and the places come back

        def reopened() -> bool:
            with ExitStack() as stack:
                opened = [open_stream(stack, server, token).status_code for _ in range(2)]
            return opened == [200, 200]

        wait_for(reopened, timeout=20, interval=0.2)
