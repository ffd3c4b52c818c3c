"""Cross-origin access for the subscriber-facing surface only (``api.cors_origins``).

A shop embeds the inbox widget in its own pages (``https://shop.example``), so the browser
calls the inbox routes of another origin with the subscriber's token in ``Authorization``:
that needs CORS (https://fetch.spec.whatwg.org/#http-cors-protocol). Only the inbox routes
(``/v1/inbox…``) and the widget's own files answer cross-origin, and only to the configured
origins; the admin API never does, so a page cannot use an operator's key from a browser.

- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from a configured origin is
  answered ``204`` with ``Access-Control-Allow-Origin`` (that origin), ``-Allow-Methods``,
  ``-Allow-Headers`` (``Authorization``, ``Content-Type``, ``Last-Event-ID``) and ``-Max-Age``;
  from any other origin, or asking for another method or header, it is refused (``403``,
  no CORS headers).
- Other requests from a configured origin get ``Access-Control-Allow-Origin`` on the
  response; from other origins they get none, so the browser keeps the answer from the page.
- No cookies are involved (the token is a bearer header or, for ``EventSource``, a query
  parameter), so credentials are never allowed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from tidings.api.problems import PROBLEM, problem_document

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INBOX_PREFIX = "/v1/inbox"
WIDGET_FILES = frozenset({"/static/widget.js", "/static/widget.css"})
METHODS = ("GET", "POST", "PUT", "DELETE")
HEADERS = ("authorization", "content-type", "last-event-id", "cache-control")
MAX_AGE = 600
"""Seconds a browser may keep a preflight's answer."""


def covered(path: str) -> bool:
    """Whether ``path`` is part of the subscriber-facing surface that may answer CORS."""
    return path == INBOX_PREFIX or path.startswith(INBOX_PREFIX + "/") or path in WIDGET_FILES


class InboxCors:
    """ASGI middleware: CORS for the inbox routes and the widget files, for ``origins``."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origin.lower().rstrip("/") for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer preflights; mark the responses of allowed origins."""
        if scope["type"] != "http" or not covered(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get("origin")
        allowed = origin is not None and origin.lower() in self.origins
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(send, origin if allowed else None, headers)
            return
        extra = [(b"vary", b"Origin")]
        if allowed and origin is not None:
            extra += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", b"Retry-After"),
            ]

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, marked)

    async def _preflight(self, send: Send, origin: str | None, headers: dict[str, str]) -> None:
        method = headers["access-control-request-method"].strip().upper()
        asked = [
            name.strip().lower()
            for name in headers.get("access-control-request-headers", "").split(",")
            if name.strip()
        ]
        if origin is None:
            await _refuse(send, "this origin may not call the inbox (api.cors_origins)")
            return
        if method not in METHODS or any(name not in HEADERS for name in asked):
            await _refuse(send, "the inbox does not take that method or header cross-origin")
            return
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-allow-methods", ", ".join(METHODS).encode()),
                    (
                        b"access-control-allow-headers",
                        b"Authorization, Content-Type, Last-Event-ID, Cache-Control",
                    ),
                    (b"access-control-max-age", str(MAX_AGE).encode()),
                    (
                        b"vary",
                        b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                    ),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


async def _refuse(send: Send, detail: str) -> None:
    body = problem_document(403, detail)
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"vary", b"Origin"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
