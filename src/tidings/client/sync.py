"""The blocking client: ``Client(url, api_key).emit("order.paid", {...})``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import httpx

import tidings.client.calls as calls
from tidings.client.calls import Accepted, Call, InboxToken, ItemResult, Retry
from tidings.client.errors import TidingsConnectionError


class Client:
    """A tidings API client (thread-safe; keep one per process and :meth:`close` it).

    >>> with Client("http://localhost:8000", "tid_...") as client:
    ...     client.emit("order.paid", {"order_id": "o-1", "buyer_id": "b-1", ...})

    Connection errors, 5xx and 429 are retried with exponential backoff and jitter, never
    sooner than ``Retry-After``, always with the same event id: a retry of an event the
    service already holds is answered as a duplicate, never stored twice.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        source: str = "/tidings-client",
        timeout: float = 10.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.source = source
        self.retry = retry or Retry()
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            headers={"authorization": f"Bearer {api_key}", "user-agent": "tidings-client"},
            transport=transport,
        )
        self.subscribers = Subscribers(self)

    def emit(
        self,
        type: str,
        data: Mapping[str, Any],
        *,
        source: str | None = None,
        id: str | None = None,
        subject: str | None = None,
        time: datetime | str | None = None,
    ) -> Accepted:
        """Send one event; ``Accepted`` once the service holds it (``202``, or ``200`` dup)."""
        event = calls.envelope(
            type, data, source=source or self.source, id=id, subject=subject, time=time
        )
        return calls.accepted(calls.checked(self.send(calls.emit_call(event))))

    def emit_many(self, events: Iterable[Mapping[str, Any]]) -> list[ItemResult]:
        """Send events in batches of up to 1,000; one result per event, in input order.

        Each mapping has ``type`` and ``data``, optionally ``id``, ``source``, ``subject``,
        ``time``. An invalid event is reported in its result (``problem``), not raised.
        """
        made = calls.envelopes(events, self.source)
        results: list[ItemResult] = []
        for start, count, call in calls.batches(made):
            response = self.send(call)
            results += calls.item_results(
                start, response.status_code, calls.checked(response), count
            )
        return results

    def inbox_token(
        self, subscriber_id: str, ttl: str | float | timedelta | None = None
    ) -> InboxToken:
        """Mint an inbox token for ``subscriber_id`` (for the widget in the shop's pages)."""
        body = {} if ttl is None else {"ttl": calls.ttl_text(ttl)}
        path = f"/v1/subscribers/{calls.segment(subscriber_id)}/inbox-token"
        found = calls.checked(self.send(calls.json_call("POST", path, body)))
        return InboxToken(str(found["token"]), str(found["expires_at"]))

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any API call with a JSON body; the JSON answer (``None`` for ``204``)."""
        return calls.checked(self.send(calls.json_call(method, path, body)))

    def send(self, call: Call) -> httpx.Response:
        """Make ``call``, retrying transient failures; the last answer."""
        attempt = 0
        while True:
            attempt += 1
            wait: float | None
            try:
                response = self._http.request(
                    call.method, call.path, content=call.body, headers=call.headers
                )
            except httpx.TransportError as exc:
                if attempt >= self.retry.attempts:
                    raise TidingsConnectionError(f"{type(exc).__name__}: {exc}") from exc
                wait = None
            else:
                if not calls.transient(response.status_code):
                    return response
                if attempt >= self.retry.attempts:
                    return response
                wait = calls.retry_after(response)
            time.sleep(self.retry.delay(attempt, wait))

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
        found: dict[str, Any] = self._client.request(
            "PUT", f"/v1/subscribers/{calls.segment(id)}", fields
        )
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
        body: dict[str, Any] = {"kind": kind}
        if token is not None:
            body["token"] = token
        if subscription is not None:
            body["subscription"] = dict(subscription)
        found = self._client.request("POST", f"/v1/subscribers/{calls.segment(id)}/devices", body)
        return str(found["device_id"])

    def get(self, id: str) -> dict[str, Any]:
        """The subscriber's profile."""
        found: dict[str, Any] = self._client.request("GET", f"/v1/subscribers/{calls.segment(id)}")
        return found

    def delete(self, id: str) -> None:
        """Erase the subscriber (and cancel whatever is still pending for them)."""
        self._client.request("DELETE", f"/v1/subscribers/{calls.segment(id)}")
