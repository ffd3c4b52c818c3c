"""Who may call what: the scope every route of ``/openapi.json`` needs (SPEC §1), and what
an authorised call answers in ``tests/api/test_scope_matrix.py``.

A route missing here fails that test: a new route must say who may call it.
``{c}`` in a path or body is the credential's name, so that each credential has its own
subscriber, device, topic … and a DELETE by one does not take another's away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OPEN = "open"
"""No credential at all (liveness, readiness)."""
INBOX = "inbox"
"""An inbox token, never an API key (SPEC §6): every API key is ``401`` there."""


@dataclass(frozen=True)
class Route:
    """The scope a route needs and what an authorised call of it answers."""

    scope: str
    ok: frozenset[int] = frozenset({200})
    body: Any = None
    why: str = ""
    """Why an authorised call answers a non-2xx status (auth passed, nothing to act on)."""


def _ok(*codes: int) -> frozenset[int]:
    return frozenset(codes)


SUBSCRIBER = "/v1/subscribers/{subscriber_id}"
EVENT = {
    "specversion": "1.0",
    "id": "matrix-{c}",
    "source": "/matrix",
    "type": "order.paid",
    "data": {
        "order_id": "o-{c}",
        "buyer_id": "m-admin",
        "seller_id": "s-1",
        "amount": "1.00",
        "currency": "CNY",
    },
}
ABSENT = "nothing of that id exists: the call passed auth and found nothing"

ROUTES: dict[str, Route] = {
    "GET /healthz": Route(OPEN),
    "GET /readyz": Route(OPEN),
    "GET /metrics": Route("read"),
    "POST /v1/events": Route("events", _ok(202), body=EVENT),
    "GET /v1/events": Route("read"),
    "GET /v1/events/{event_id}": Route("read"),
    f"PUT {SUBSCRIBER}": Route("admin", _ok(200, 201), body={"name": "M {c}"}),
    f"GET {SUBSCRIBER}": Route("read"),
    f"DELETE {SUBSCRIBER}": Route("admin", _ok(204)),
    "GET /v1/subscribers": Route("read"),
    f"POST {SUBSCRIBER}/devices": Route(
        "admin", _ok(201), body={"kind": "fcm", "token": "matrix-token-{c}-again"}
    ),
    f"GET {SUBSCRIBER}/devices": Route("read"),
    f"DELETE {SUBSCRIBER}/devices/{{device_id}}": Route("admin", _ok(204)),
    f"POST {SUBSCRIBER}/webhooks": Route(
        "admin", _ok(201), body={"url": "http://127.0.0.1:9/hook-{c}"}
    ),
    f"GET {SUBSCRIBER}/webhooks": Route("read"),
    f"GET {SUBSCRIBER}/preferences": Route("read"),
    f"PUT {SUBSCRIBER}/preferences": Route("admin", body={"channels": {"email": True}}),
    f"POST {SUBSCRIBER}/inbox-token": Route("tokens", body={}),
    f"GET {SUBSCRIBER}/export": Route("admin"),
    f"GET {SUBSCRIBER}/topics": Route("read"),
    "GET /v1/notifications": Route("read"),
    "GET /v1/notifications/{notification_id}": Route("read"),
    "GET /v1/inbox": Route(INBOX),
    "GET /v1/inbox/count": Route(INBOX),
    "POST /v1/inbox/read-all": Route(INBOX),
    "POST /v1/inbox/seen-all": Route(INBOX),
    "POST /v1/inbox/{item_id}/read": Route(INBOX),
    "POST /v1/inbox/{item_id}/archive": Route(INBOX),
    "GET /v1/inbox/preferences": Route(INBOX),
    "PUT /v1/inbox/preferences": Route(INBOX),
    "GET /v1/inbox/categories": Route(INBOX),
    "GET /v1/inbox/stream": Route(INBOX),
    "GET /v1/inbox/topics": Route(INBOX),
    "PUT /v1/inbox/topics/{key}": Route(INBOX),
    "DELETE /v1/inbox/topics/{key}": Route(INBOX),
    "GET /v1/dlq": Route("read"),
    "POST /v1/dlq/{dead_id}/replay": Route("admin", _ok(404), why=ABSENT),
    "GET /v1/callbacks": Route("admin"),
    "POST /v1/callbacks": Route("admin", _ok(201), body={"url": "http://127.0.0.1:9/cb-{c}"}),
    "GET /v1/callbacks/{callback_id}": Route("admin"),
    "DELETE /v1/callbacks/{callback_id}": Route("admin", _ok(204)),
    "PUT /v1/topics/{key}": Route("admin", _ok(200, 201), body={"name": "T {c}"}),
    "GET /v1/topics/{key}": Route("read"),
    "DELETE /v1/topics/{key}": Route("admin", _ok(204)),
    "GET /v1/topics": Route("read"),
    "POST /v1/topics/{key}/subscribers": Route("admin", body={"add": ["m-{c}"]}),
    "GET /v1/topics/{key}/subscribers": Route("read"),
    "POST /v1/broadcasts": Route(
        "admin", _ok(422), body={}, why="an empty broadcast: auth passed, the body did not"
    ),
    "GET /v1/broadcasts": Route("read"),
    "GET /v1/broadcasts/{broadcast_id}": Route("read", _ok(404), why=ABSENT),
    "POST /v1/broadcasts/{broadcast_id}/{action}": Route("admin", _ok(404), why=ABSENT),
    "GET /v1/broadcasts/{broadcast_id}/recipients/{subscriber_id}": Route(
        "read", _ok(404), why=ABSENT
    ),
    "GET /v1/audit": Route("admin"),
    "GET /v1/availability": Route("read"),
    "GET /v1/admin/overview": Route("read"),
    "GET /v1/admin/events/recent": Route("read"),
    "GET /v1/admin/events/{event_pk}/explain": Route("read"),
    "GET /v1/admin/dead-letters": Route("read"),
    "GET /v1/admin/subscribers/{subscriber_id}": Route("read"),
}

CREDENTIALS: dict[str, frozenset[str] | None] = {
    "none": None,
    "wrong": None,
    "events": frozenset({"events"}),
    "read": frozenset({"read"}),
    "pii": frozenset({"pii"}),
    "tokens": frozenset({"tokens"}),
    "admin": frozenset({"admin"}),
    "expired": None,
    "revoked": None,
}
"""Each credential and its scopes (``None``: it authenticates nothing)."""


def expected(route: Route, credential: str) -> frozenset[int]:
    """The statuses ``credential`` may get from ``route``."""
    if route.scope == OPEN:
        return route.ok
    scopes = CREDENTIALS[credential]
    if scopes is None or route.scope == INBOX:
        return _ok(401)
    if "admin" in scopes or route.scope in scopes:
        return route.ok
    return _ok(403)
