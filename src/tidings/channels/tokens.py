"""Access tokens that a provider fetches from its service and reuses until they expire.

Huawei (OAuth 2.0 client credentials), OPPO and vivo (signed auth calls) and WeChat (an app
access token) all trade long-lived credentials for a short-lived token. :class:`AccessTokens`
fetches one on demand, shares it among concurrent sends (one fetch for a burst), refreshes it
shortly before it expires, and forgets it when the service refuses it, so that
:func:`with_token` renews it once and retries: one fetch serves every send of its lifetime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tidings.errors import PermanentProviderError

T = TypeVar("T")

Fetch = Callable[[], Awaitable[tuple[str, float]]]
"""Fetches a new token: ``(token, lifetime in seconds)``; raises a ProviderError on failure."""


class TokenRejected(Exception):
    """Raised inside :func:`with_token` when the service refused the token (expired, revoked)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class AccessTokens:
    """One provider's current access token, fetched on demand and cached."""

    def __init__(self, fetch: Fetch, *, clock: Callable[[], float] = time.time) -> None:
        self.fetch = fetch
        self.clock = clock
        self.fetched = 0
        """How many tokens were fetched (the benchmark reports it per 10,000 sends)."""
        self._token: str | None = None
        self._valid_until = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """A valid token, fetching one only when the cached one is (nearly) expired."""
        if self._token is not None and self.clock() < self._valid_until:
            return self._token
        async with self._lock:  # one fetch for a burst of concurrent sends
            if self._token is not None and self.clock() < self._valid_until:
                return self._token
            token, lifetime = await self.fetch()
            # refresh a little early so that a token never expires in flight
            self._valid_until = self.clock() + lifetime - min(300.0, lifetime * 0.1)
            self._token = token
            self.fetched += 1
            return token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the service refused it) unless a newer one already replaced it."""
        if self._token == token:
            self._token = None


async def with_token(tokens: AccessTokens, name: str, call: Callable[[str], Awaitable[T]]) -> T:
    """``call(token)``; when it raises :class:`TokenRejected`, renew the token and call once
    more. A fresh token refused as well means the credentials are wrong: permanent."""
    token = await tokens.get()
    try:
        return await call(token)
    except TokenRejected:
        tokens.invalidate(token)
    token = await tokens.get()
    try:
        return await call(token)
    except TokenRejected as exc:
        tokens.invalidate(token)
        raise PermanentProviderError(
            f"{name}: a fresh access token was refused too: {exc.detail}", code="auth"
        ) from exc
