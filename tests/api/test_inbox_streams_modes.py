"""Live inbox streams end with their token and are capped per subscriber, embedded and
scaled out (the API process's hub relays items from the workers there)."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

import httpx
import pytest

from testbed.harness import Server, wait_for
from tests.api.test_inbox_tokens import open_stream


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


def test_the_cap_holds_across_the_processes_of_a_machine(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    config = {"inbox": {"max_streams": 2}}
    running = Server(tmp_path_factory.mktemp("two-processes"), config=config, processes=2)
    running.start()
    try:
        token = running.token(f"buyer-{uuid.uuid4().hex[:6]}")
        for _ in range(2):
            with ExitStack() as stack:
                held = [open_stream(stack, running, token) for _ in range(2)]
                assert [r.status_code for r in held] == [200, 200]
                # whichever process takes them, no more streams for this subscriber
                assert [open_stream(stack, running, token).status_code for _ in range(8)] == [
                    429
                ] * 8

            def reopened() -> bool:  # closed streams give their places back
                with ExitStack() as stack:
                    codes = [open_stream(stack, running, token).status_code for _ in range(2)]
                return codes == [200, 200]

            wait_for(reopened, timeout=20, interval=0.2)
    finally:
        running.stop()
