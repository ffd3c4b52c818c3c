"""Live inbox streams end with their token and are capped per subscriber, embedded and
scaled out (the API process's hub relays items from the workers there)."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import httpx

from tests.api.test_inbox_tokens import open_stream
from tests.harness import Server


def test_streams_are_capped_and_end_with_their_token(server: Server) -> None:
    buyer = f"buyer-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        token = server.token(buyer)
        assert [open_stream(stack, server, token).status_code for _ in range(5)] == [200] * 5
        assert open_stream(stack, server, token).status_code == 429  # inbox.max_streams: 5
    seen: list[str] = []
    with httpx.stream(
        "GET",
        f"{server.url}/v1/inbox/stream",
        params={"token": server.token(f"{buyer}-2", ttl=2)},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        seen.extend(response.iter_lines())
    assert "event: expired" in seen
