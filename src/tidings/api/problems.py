"""RFC 9457 problem details, and the mapping of the error tree onto HTTP statuses."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.api.openapi import document_problems
from tidings.errors import Conflict, InvalidInput, NotFound, TidingsError

PROBLEM = "application/problem+json"
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _document(status: int, detail: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return body


def problem_document(status: int, detail: str, *, field: str | None = None) -> bytes:
    """The JSON bytes of a problem (for handlers that answer in plain ASGI).

    A detail that quotes bad input (a lone surrogate) cannot fail the answer: what does not
    encode as UTF-8 becomes ``?``.
    """
    text = json.dumps(_document(status, detail, field), ensure_ascii=False)
    return text.encode("utf-8", "replace")


def problem(
    status: int, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """A ``application/problem+json`` response."""
    return Response(
        problem_document(status, detail, field=field), status, headers=headers, media_type=PROBLEM
    )


def problem_body(exc: InvalidInput) -> dict[str, Any]:
    """The per-item problem of a batch result."""
    return _document(exc.status, str(exc), exc.field)


class ApiError(Exception):
    """An HTTP error raised inside a handler, rendered as a problem."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.detail = detail
        self.headers = headers
        super().__init__(detail)


class RefuseNul:
    """ASGI middleware: a URL holding NUL (``%00``) is a ``400`` before any route reads it.

    An id with NUL would reach PostgreSQL, whose text cannot hold it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer ``400`` to a URL holding NUL; pass everything else on."""
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            refused = problem(400, "a URL may not contain NUL (%00)", field="/")
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the exception handlers that render every error as a problem (and document
    those answers in the app's OpenAPI); refuse URLs holding NUL."""
    document_problems(app)
    app.add_middleware(RefuseNul)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> Response:
        return problem(400, "the client went away before sending its whole body")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return problem(exc.status, exc.detail, headers=exc.headers)

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> Response:
        return problem(exc.status, str(exc), field=exc.field)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> Response:
        return problem(404, str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> Response:
        return problem(409, str(exc))

    @app.exception_handler(TidingsError)
    async def _tidings(_: Request, exc: TidingsError) -> Response:
        return problem(500, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        loc = "/" + "/".join(str(p) for p in first.get("loc", ())[1:])
        return problem(422, str(first.get("msg")), field=loc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
