"""What the sync and async clients share: request building, retry policy, result parsing.

The clients differ only in how they send and sleep; every decision is made here. Each
operation is a generator of :data:`Step` s (:func:`emit`, :func:`emit_many` …): it yields a
:class:`Call` to make or seconds to sleep, is sent back the response (or the transport
error), and returns the result — so the client's only code is running it
(``Client._run``, ``AsyncClient._run``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypedDict, TypeVar
from urllib.parse import quote

import httpx

from tidings.client.errors import TidingsConnectionError, TidingsError
from tidings.ids import new_id

BATCH_EVENTS = 1000
"""Events per batch request at most (the service's limit)."""
BATCH_BYTES = 900 * 1024
"""Encoded bytes per batch request at most (the service refuses bodies over 1 MiB)."""
BATCH_TYPE = "application/cloudevents-batch+json"
EVENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how long to retry: exponential backoff with full jitter.

    The delay before retry ``n`` (1-based) is a random share of
    ``min(max_backoff, backoff * 2 ** (n - 1))``, and never less than the server's
    ``Retry-After``.
    """

    attempts: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt``."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        jittered = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrecy
        return max(jittered, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class Call:
    """One request to make (and, on a transient failure, to make again unchanged)."""

    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The service's answer to one event: ``202`` accepted, ``200`` a duplicate."""

    id: str
    source: str
    status: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One event of :meth:`~tidings.client.Client.emit_many`, in input order."""

    index: int
    id: str | None
    status: int
    duplicate: bool
    problem: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the service holds the event (accepted now or before)."""
        return self.status in (200, 202)


@dataclass(frozen=True, slots=True)
class InboxToken:
    """A subscriber's inbox token and when it expires."""

    token: str
    expires_at: str


def transient(status: int) -> bool:
    """Whether an answer with ``status`` is worth the same request again (5xx, 429)."""
    return status >= 500 or status == 429


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` of ``response`` in seconds (delta or HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem body of a refused request (a minimal one when the body is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"title": response.reason_phrase or "error", "status": response.status_code}


def checked(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; :class:`TidingsError` for any other."""
    if response.status_code >= 400:
        raise TidingsError(response.status_code, problem_of(response))
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def _time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def envelope(
    event_type: str,
    data: Mapping[str, Any],
    *,
    source: str,
    id: str | None = None,
    subject: str | None = None,
    time: datetime | str | None = None,
) -> dict[str, Any]:
    """A structured CloudEvent; an id is made when none is given (and kept across retries)."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": id or new_id(),
        "source": source,
        "type": event_type,
        "data": dict(data),
    }
    if subject is not None:
        event["subject"] = subject
    stamp = _time(time)
    if stamp is not None:
        event["time"] = stamp
    return event


def emit_call(event: dict[str, Any]) -> Call:
    """``POST /v1/events`` of one structured event."""
    return Call("POST", "/v1/events", _encode(event), {"content-type": EVENT_TYPE})


def accepted(body: Any) -> Accepted:
    """The answer to one event."""
    return Accepted(str(body["id"]), str(body["source"]), int(body["status"]), body["duplicate"])


def envelopes(events: Iterable[Mapping[str, Any]], source: str) -> list[dict[str, Any]]:
    """Structured events from mappings with ``type``, ``data`` and optionally ``id``,
    ``source``, ``subject``, ``time`` (each gets an id now, so a retry repeats it)."""
    made = []
    for item in events:
        made.append(
            envelope(
                str(item["type"]),
                item.get("data") or {},
                source=str(item.get("source") or source),
                id=item.get("id"),
                subject=item.get("subject"),
                time=item.get("time"),
            )
        )
    return made


def batches(events: list[dict[str, Any]]) -> Iterator[tuple[int, int, Call]]:
    """``(index of the first event, events, call)`` per batch: ≤ 1,000 events, ≤ 900 KiB."""
    start = 0
    chunk: list[bytes] = []
    size = 2
    for index, event in enumerate(events):
        encoded = _encode(event)
        if chunk and (len(chunk) >= BATCH_EVENTS or size + len(encoded) + 1 > BATCH_BYTES):
            yield start, len(chunk), _batch_call(chunk)
            start, chunk, size = index, [], 2
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        yield start, len(chunk), _batch_call(chunk)


def _batch_call(chunk: list[bytes]) -> Call:
    return Call("POST", "/v1/events", b"[" + b",".join(chunk) + b"]", {"content-type": BATCH_TYPE})


def item_results(start: int, status: int, body: Any, count: int) -> list[ItemResult]:
    """Per-item results of a batch answer, indexed from ``start`` (the whole input's order)."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise TidingsError(status, {"title": "unexpected batch answer", "detail": str(body)[:300]})
    return [
        ItemResult(
            start + int(r["index"]),
            r.get("id"),
            int(r["status"]),
            bool(r["duplicate"]),
            r.get("problem"),
        )
        for r in results
    ]


def json_call(method: str, path: str, body: Any = None) -> Call:
    """A JSON request."""
    if body is None:
        return Call(method, path)
    return Call(method, path, _encode(body), {"content-type": "application/json"})


def segment(value: str) -> str:
    """``value`` as one URL path segment."""
    return quote(value, safe="")


def ttl_text(ttl: str | float | timedelta | None) -> str | float | None:
    """A token lifetime as the service reads it: a duration (``"15m"``) or seconds."""
    if isinstance(ttl, timedelta):
        return ttl.total_seconds()
    return ttl


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


T = TypeVar("T")
Step = Call | float
"""What an operation asks of its client: make this call, or sleep this many seconds."""
Outcome = httpx.Response | httpx.TransportError | None
"""What the client sends back: the call's response or transport error (``None`` after a
sleep)."""
Steps = Generator[Step, Outcome, T]
"""An operation in progress, returning ``T``."""


class EventFields(TypedDict, total=False):
    """The optional attributes of an event :meth:`~tidings.client.Client.emit` takes."""

    source: str | None
    id: str | None
    subject: str | None
    time: datetime | str | None


class Options(TypedDict, total=False):
    """The options of both clients besides their transport: the events' default ``source``
    (``/tidings-client``), the ``timeout`` in seconds (10), the ``retry`` policy."""

    source: str
    timeout: float
    retry: Retry | None


@dataclass(frozen=True, slots=True)
class Setup:
    """A client's settings: the default event source, the retry policy, the HTTP options."""

    source: str
    retry: Retry
    http: dict[str, Any]

    @classmethod
    def of(cls, url: str, api_key: str, options: Options) -> Setup:
        """The settings of a client of ``url`` with ``api_key``."""
        headers = {"authorization": f"Bearer {api_key}", "user-agent": "tidings-client"}
        timeout = options.get("timeout", 10.0)
        http = {"base_url": url.rstrip("/"), "timeout": timeout, "headers": headers}
        return cls(options.get("source", "/tidings-client"), options.get("retry") or Retry(), http)


def exchange(call: Call, retry: Retry) -> Steps[httpx.Response]:
    """Make ``call``, again after a transient failure; the last answer.

    :class:`TidingsConnectionError` once the attempts are spent on transport errors.
    """
    attempt = 0
    while True:
        attempt += 1
        outcome = yield call
        if isinstance(outcome, httpx.TransportError):
            if attempt >= retry.attempts:
                raise TidingsConnectionError(f"{type(outcome).__name__}: {outcome}") from outcome
            wait = None
        else:
            assert outcome is not None
            if not transient(outcome.status_code) or attempt >= retry.attempts:
                return outcome
            wait = retry_after(outcome)
        yield retry.delay(attempt, wait)


def emit(
    setup: Setup, event_type: str, data: Mapping[str, Any], fields: EventFields
) -> Steps[Accepted]:
    """Send one event."""
    event = envelope(
        event_type,
        data,
        source=fields.get("source") or setup.source,
        id=fields.get("id"),
        subject=fields.get("subject"),
        time=fields.get("time"),
    )
    return accepted(checked((yield from exchange(emit_call(event), setup.retry))))


def emit_many(setup: Setup, events: Iterable[Mapping[str, Any]]) -> Steps[list[ItemResult]]:
    """Send events in batches; one result per event, in input order."""
    results: list[ItemResult] = []
    for start, count, call in batches(envelopes(events, setup.source)):
        response = yield from exchange(call, setup.retry)
        results += item_results(start, response.status_code, checked(response), count)
    return results


def inbox_token(
    setup: Setup, subscriber_id: str, ttl: str | float | timedelta | None
) -> Steps[InboxToken]:
    """Mint an inbox token for ``subscriber_id``."""
    body = {} if ttl is None else {"ttl": ttl_text(ttl)}
    path = f"/v1/subscribers/{segment(subscriber_id)}/inbox-token"
    found = yield from requested(setup, "POST", path, body)
    return InboxToken(str(found["token"]), str(found["expires_at"]))


def requested(setup: Setup, method: str, path: str, body: Any = None) -> Steps[Any]:
    """Any API call with a JSON body; the JSON answer (``None`` for ``204``)."""
    return checked((yield from exchange(json_call(method, path, body), setup.retry)))


def device(
    setup: Setup,
    subscriber_id: str,
    kind: str,
    token: str | None,
    subscription: Mapping[str, Any] | None,
) -> Steps[str]:
    """Register a push device; its id."""
    body: dict[str, Any] = {"kind": kind}
    if token is not None:
        body["token"] = token
    if subscription is not None:
        body["subscription"] = dict(subscription)
    path = f"/v1/subscribers/{segment(subscriber_id)}/devices"
    found = yield from requested(setup, "POST", path, body)
    return str(found["device_id"])


def subscriber_path(subscriber_id: str) -> str:
    """``/v1/subscribers/{id}``."""
    return f"/v1/subscribers/{segment(subscriber_id)}"
