"""The hot path of ingestion: ``POST /v1/events`` served in plain ASGI, ahead of FastAPI.

Accepting events is the one request a shop sends thousands of times a second. FastAPI's
routing, dependency injection and middleware stack cost several times more CPU than the work
itself (measured with py-spy: ~60% of an accept), so this wrapper answers that one path
directly — same auth, same parsing (:func:`tidings.api.events.ingest`), same problem bodies —
and hands every other request to the FastAPI app. The route stays registered on the app,
so ``/docs`` documents it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tidings.api.deps import MAX_BODY, authorize
from tidings.api.events import ingest
from tidings.api.problems import PROBLEM, ApiError, problem_document
from tidings.errors import InvalidInput, PayloadTooLarge, TidingsError
from tidings.runtime.service import Service

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(…, ensure_ascii=False)`` without building an encoder per response."""


class EventsFastPath:
    """Wraps the FastAPI app; serves ``POST /v1/events`` itself."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route the one hot path; pass everything else on (but a URL holding NUL)."""
        if scope["type"] != "http" or scope["path"] != "/v1/events" or scope["method"] != "POST":
            if scope["type"] == "http" and (
                "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
            ):
                # an id with NUL would reach PostgreSQL, whose text cannot hold it
                detail = "a URL may not contain NUL (%00)"
                await _answer(send, 400, problem_document(400, detail, field="/"), PROBLEM)
                return
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        extra: dict[str, str] = {}
        try:
            authorize(self.service, headers.get("authorization", ""), "events")
            body = await _read(headers, receive)
            status, document = await ingest(self.service, headers, body)
            payload = _JSON_TEXT(document).encode()
            media = "application/json"
        except ApiError as exc:
            status, extra, media = exc.status, exc.headers or {}, PROBLEM
            payload = problem_document(exc.status, exc.detail)
        except InvalidInput as exc:
            status, media = exc.status, PROBLEM
            payload = problem_document(exc.status, str(exc), field=exc.field)
        except TidingsError as exc:
            status, media = 500, PROBLEM
            payload = problem_document(500, f"{type(exc).__name__}: {exc}")
        await _answer(send, status, payload, media, extra)


async def _answer(
    send: Send, status: int, payload: bytes, media: str, extra: dict[str, str] | None = None
) -> None:
    response_headers = [
        (b"content-type", media.encode()),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (extra or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})


async def _read(headers: dict[str, str], receive: Receive) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY} bytes", "/")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInput("the client went away", "/", status=400)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"the body is larger than {MAX_BODY} bytes", "/")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
