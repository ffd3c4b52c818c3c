"""The FastAPI application: routers, problem handlers, and the service's life cycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tidings import __version__
from tidings.api import admin, events, inbox, intake, notifications, problems, subscribers
from tidings.api import audit as audit_trail
from tidings.api import availability as availability_api
from tidings.api import broadcasts as broadcast_api
from tidings.api import callbacks as status_callbacks
from tidings.api import export as subscriber_export
from tidings.api import topics as topic_api
from tidings.api.cors import InboxCors
from tidings.runtime.service import Service
from tidings.web import routes as web_routes


def create_app(service: Service, *, manage: bool = True) -> FastAPI:
    """The HTTP app for ``service`` (started and stopped with the app when ``manage``)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage:
            await service.start()
        try:
            yield
        finally:
            if manage:
                await service.aclose()

    app = FastAPI(
        title="tidings",
        version=__version__,
        description="Message push and notification engine for e-commerce trade systems.",
        lifespan=lifespan,
    )
    app.state.service = service
    problems.install(app)
    intake.install(app)  # POST /v1/events, matched first: a shop sends thousands a second
    app.add_middleware(audit_trail.AuditTrail)  # every successful write, before its answer
    for module in (
        events,
        subscribers,
        notifications,
        inbox,
        admin,
        status_callbacks,
        subscriber_export,
        audit_trail,
    ):
        app.include_router(module.router)
    for module in (topic_api, broadcast_api):  # audiences and broadcasts (SPEC §10)
        app.include_router(module.router)
    app.include_router(availability_api.router)  # MTBF, MTTR, availability (SPEC §13)
    app.include_router(web_routes.router)  # the dashboard (no optional dependency)
    if service.settings.api.cors_origins:  # the shop's pages call the inbox (SPEC §11)
        app.add_middleware(InboxCors, origins=service.settings.api.cors_origins)
    return app
