"""The asyncio client: ``await AsyncClient(url, api_key).emit("order.paid", {...})``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

import tidings.client.calls as calls
from tidings.client.calls import Accepted, Call, EventFields, InboxToken, ItemResult, Options

T = TypeVar("T")


class AsyncOptions(Options, total=False):
    """:class:`~tidings.client.calls.Options` and an httpx ``transport`` (tests, proxies)."""

    transport: httpx.AsyncBaseTransport | None


class AsyncClient:
    """:class:`~tidings.client.Client` for asyncio: the same calls, retries and options.

    >>> async with AsyncClient("http://localhost:8000", "tid_...") as client:
    ...     await client.emit("order.paid", {"order_id": "o-1", "buyer_id": "b-1", ...})

    Keep one per process and :meth:`aclose` it.
    """

    def __init__(self, url: str, api_key: str, **options: Unpack[AsyncOptions]) -> None:
        self.setup = calls.Setup.of(url, api_key, options)
        self._http = httpx.AsyncClient(**self.setup.http, transport=options.get("transport"))
        self.subscribers = AsyncSubscribers(self)

    async def emit(
        self, type: str, data: Mapping[str, Any], **fields: Unpack[EventFields]
    ) -> Accepted:
        """Send one event; ``Accepted`` once the service holds it (``202``, or ``200`` dup).

        ``source``, ``id``, ``subject``, ``time`` (a datetime or ISO 8601 text) are optional.
        """
        return await self._run(calls.emit(self.setup, type, data, fields))

    async def emit_many(self, events: Iterable[Mapping[str, Any]]) -> list[ItemResult]:
        """Send events in batches of up to 1,000; one result per event, in input order.

        Each mapping has ``type`` and ``data``, optionally ``id``, ``source``, ``subject``,
        ``time``. An invalid event is reported in its result (``problem``), not raised.
        """
        return await self._run(calls.emit_many(self.setup, events))

    async def inbox_token(
        self, subscriber_id: str, ttl: str | float | timedelta | None = None
    ) -> InboxToken:
        """Mint an inbox token for ``subscriber_id`` (for the widget in the shop's pages)."""
        return await self._run(calls.inbox_token(self.setup, subscriber_id, ttl))

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any API call with a JSON body; the JSON answer (``None`` for ``204``)."""
        return await self._run(calls.requested(self.setup, method, path, body))

    async def send(self, call: Call) -> httpx.Response:
        """Make ``call``, retrying transient failures; the last answer."""
        return await self._run(calls.exchange(call, self.setup.retry))

    async def _run(self, steps: calls.Steps[T]) -> T:
        outcome: calls.Outcome = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, Call):
                    try:
                        outcome = await self._http.request(
                            step.method, step.path, content=step.body, headers=step.headers
                        )
                    except httpx.TransportError as exc:
                        outcome = exc
                else:
                    await asyncio.sleep(step)
                    outcome = None
        except StopIteration as done:
            result: T = done.value
            return result

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncSubscribers:
    """``client.subscribers``: profiles and devices."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def upsert(self, id: str, **fields: Any) -> dict[str, Any]:
        """Create or replace the subscriber's profile (``name``, ``email``, ``locale`` …)."""
        found: dict[str, Any] = await self._client.request("PUT", calls.subscriber_path(id), fields)
        return found

    async def add_device(
        self,
        id: str,
        kind: str,
        token: str | None = None,
        *,
        subscription: Mapping[str, Any] | None = None,
    ) -> str:
        """Register a push device (``fcm``/``apns`` token, or a Web Push ``subscription``)."""
        return await self._client._run(
            calls.device(self._client.setup, id, kind, token, subscription)
        )

    async def get(self, id: str) -> dict[str, Any]:
        """The subscriber's profile."""
        found: dict[str, Any] = await self._client.request("GET", calls.subscriber_path(id))
        return found

    async def delete(self, id: str) -> None:
        """Erase the subscriber (and cancel whatever is still pending for them)."""
        await self._client.request("DELETE", calls.subscriber_path(id))
