"""The blocking client: ``Client(url, api_key).emit("order.paid", {...})``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

import tidings.client.calls as calls
from tidings.client.calls import Accepted, Call, EventFields, InboxToken, ItemResult, Options

T = TypeVar("T")


class SyncOptions(Options, total=False):
    """:class:`~tidings.client.calls.Options` and an httpx ``transport`` (tests, proxies)."""

    transport: httpx.BaseTransport | None


class Client:
    """A tidings API client (thread-safe; keep one per process and :meth:`close` it).

    >>> with Client("http://localhost:8000", "tid_...") as client:
    ...     client.emit("order.paid", {"order_id": "o-1", "buyer_id": "b-1", ...})

    Connection errors, 5xx and 429 are retried with exponential backoff and jitter, never
    sooner than ``Retry-After``, always with the same event id: a retry of an event the
    service already holds is answered as a duplicate, never stored twice. Options:
    ``source`` (of the events, default ``/tidings-client``), ``timeout`` (seconds),
    ``retry`` (a :class:`~tidings.client.Retry`).
    """

    def __init__(self, url: str, api_key: str, **options: Unpack[SyncOptions]) -> None:
        self.setup = calls.Setup.of(url, api_key, options)
        self._http = httpx.Client(**self.setup.http, transport=options.get("transport"))
        self.subscribers = Subscribers(self)

    def emit(self, type: str, data: Mapping[str, Any], **fields: Unpack[EventFields]) -> Accepted:
        """Send one event; ``Accepted`` once the service holds it (``202``, or ``200`` dup).

        ``source``, ``id``, ``subject``, ``time`` (a datetime or ISO 8601 text) are optional.
        """
        return self._run(calls.emit(self.setup, type, data, fields))

    def emit_many(self, events: Iterable[Mapping[str, Any]]) -> list[ItemResult]:
        """Send events in batches of up to 1,000; one result per event, in input order.

        Each mapping has ``type`` and ``data``, optionally ``id``, ``source``, ``subject``,
        ``time``. An invalid event is reported in its result (``problem``), not raised.
        """
        return self._run(calls.emit_many(self.setup, events))

    def inbox_token(
        self, subscriber_id: str, ttl: str | float | timedelta | None = None
    ) -> InboxToken:
        """Mint an inbox token for ``subscriber_id`` (for the widget in the shop's pages)."""
        return self._run(calls.inbox_token(self.setup, subscriber_id, ttl))

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any API call with a JSON body; the JSON answer (``None`` for ``204``)."""
        return self._run(calls.requested(self.setup, method, path, body))

    def send(self, call: Call) -> httpx.Response:
        """Make ``call``, retrying transient failures; the last answer."""
        return self._run(calls.exchange(call, self.setup.retry))

    def _run(self, steps: calls.Steps[T]) -> T:
        outcome: calls.Outcome = None
        try:
            while True:
                step = steps.send(outcome)
                if isinstance(step, Call):
                    try:
                        outcome = self._http.request(
                            step.method, step.path, content=step.body, headers=step.headers
                        )
                    except httpx.TransportError as exc:
                        outcome = exc
                else:
                    time.sleep(step)
                    outcome = None
        except StopIteration as done:
            result: T = done.value
            return result

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Subscribers:
    """``client.subscribers``: profiles and devices."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def upsert(self, id: str, **fields: Any) -> dict[str, Any]:
        """Create or replace the subscriber's profile (``name``, ``email``, ``locale`` …)."""
        found: dict[str, Any] = self._client.request("PUT", calls.subscriber_path(id), fields)
        return found

    def add_device(
        self,
        id: str,
        kind: str,
        token: str | None = None,
        *,
        subscription: Mapping[str, Any] | None = None,
    ) -> str:
        """Register a push device (``fcm``/``apns`` token, or a Web Push ``subscription``)."""
        return self._client._run(calls.device(self._client.setup, id, kind, token, subscription))

    def get(self, id: str) -> dict[str, Any]:
        """The subscriber's profile."""
        found: dict[str, Any] = self._client.request("GET", calls.subscriber_path(id))
        return found

    def delete(self, id: str) -> None:
        """Erase the subscriber (and cancel whatever is still pending for them)."""
        self._client.request("DELETE", calls.subscriber_path(id))
