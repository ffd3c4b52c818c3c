"""``POST /v1/events``: the app's first route, documented like every route, served lean.

Accepting events is the one request a shop sends thousands of times a second, and FastAPI's
dependency injection and response handling cost more CPU than the work itself (py-spy: ~60%
of an accept). So :class:`IntakeRoute` is an :class:`~fastapi.routing.APIRoute` — ``/docs``
documents it from :func:`post_events` — whose ASGI app is :func:`accept`: the same key check
(:func:`~tidings.api.deps.authorize`), the same bounded body
(:func:`~tidings.api.deps.receive_body`), the same parsing (:func:`tidings.api.events.ingest`),
and no dependency solving. What it raises reaches the app's exception handlers, as on every
other route. It is inserted first, so the router matches it before anything else.

Reaching even the first route costs the app's whole stack (FastAPI's telemetry check, its
middlewares, the router): measured in process, ~30 µs more CPU per accept than :func:`accept`
alone (~60 µs), a fifth fewer events/s in the ingest benchmark. ``tidings serve`` therefore
wraps the app in :class:`ExpressLane`, which hands ``POST /v1/events`` to :func:`accept`
directly and answers what it raises with the app's own exception handlers.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tidings import json_output
from tidings.api.deps import authorize, receive_body
from tidings.api.events import ingest
from tidings.api.openapi import EVENTS_OPENAPI
from tidings.runtime.service import Service


async def accept(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ``POST /v1/events`` (plain ASGI; errors raise to the app's handlers)."""
    svc: Service = scope["app"].state.service
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    authorize(svc, headers.get("authorization", ""), "events")
    status, document = await ingest(svc, headers, await receive_body(headers, receive))
    payload = json_output.utf8(document)
    length = str(len(payload)).encode()
    response_headers = [(b"content-type", b"application/json"), (b"content-length", length)]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})


async def post_events() -> None:
    """Accept one event (structured or binary mode) or a batch; ``202`` once durable.

    Needs an API key with the ``events`` scope. (What ``/docs`` shows: :func:`accept`
    serves the route.)
    """


class IntakeRoute(APIRoute):
    """``POST /v1/events`` as documented by :func:`post_events`, served by :func:`accept`."""

    def __init__(self) -> None:
        super().__init__(
            "/v1/events",
            post_events,
            methods=["POST"],
            status_code=202,
            summary="Accept CloudEvents",
            tags=["events"],
            openapi_extra=EVENTS_OPENAPI,
        )
        self.app = accept


def install(app: FastAPI) -> None:
    """Make ``POST /v1/events`` the app's first route."""
    app.router.routes.insert(0, IntakeRoute())


class ExpressLane:
    """Wraps the app for serving: ``POST /v1/events`` goes to :func:`accept` directly.

    Everything else, and the lifespan, goes to the app. What :func:`accept` raises is
    answered by the app's exception handler for it (the one every other route uses).
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route the one hot path; pass everything else on."""
        if scope["type"] != "http" or scope["path"] != "/v1/events" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        try:
            await accept(scope, receive, send)
        except Exception as exc:
            answer = await _handled(self.app, Request(scope, receive), exc)
            if answer is None:
                raise
            await answer(scope, receive, send)


async def _handled(app: FastAPI, request: Request, exc: Exception) -> Response | None:
    """What ``app``'s exception handler for ``exc`` answers (``None``: it has none)."""
    for kind in type(exc).__mro__:
        handler = app.exception_handlers.get(kind)
        if handler is not None:
            answer = handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
    return None
