"""The HTTP application: Segment-compatible ingest, admin API, health, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

import rapport
from rapport.api import conditions, ingest, profiles, segments, templates
from rapport.api.business_events import router as business_events_router
from rapport.api.code_pools import router as code_pools_router
from rapport.api.computed_traits import router as computed_traits_router
from rapport.api.errors import install_error_handlers
from rapport.api.inbox import router as inbox_router
from rapport.api.ingest_priority import IngestActivity
from rapport.api.journeys import router as journeys_router
from rapport.api.message_links import router as message_links_router
from rapport.api.messages import router as messages_router
from rapport.api.policy import router as policy_router
from rapport.runtime.service import Rapport, freeze_heap
from rapport.settings import Settings

# Browsers post events from any shop's pages; echoing the origin (rather than
# "*") keeps requests made with credentials working too.
CORS_OPTIONS: dict[str, Any] = {
    "allow_origin_regex": ".*",
    "allow_credentials": True,
    "allow_methods": ["*"],
    "allow_headers": ["*"],
    "max_age": 86400,
}


def give_way_to_ingest(runtime: Rapport, activity: IngestActivity) -> None:
    """Make the runtime's processor wait for pauses in ingest (``ingest_priority``)."""
    max_lag = runtime.settings.max_processing_lag

    async def give_way() -> bool:
        return await activity.give_way(runtime.lag, max_lag)

    runtime.processor.give_way = give_way


class RapportApp(FastAPI):
    """FastAPI, with POSTs to the ingest paths taken ahead of its middleware stack.

    Ingest is the hot path: FastAPI's per-request layers (exception and
    telemetry middleware, async exit stacks, routing, the request handler)
    cost about as much as validating a 100-event batch. Those POSTs go to
    ``ingest.serve_ingest`` wrapped in the same CORS and server-error
    middleware instead; the routes stay registered for the OpenAPI document
    and for every other method. Middleware added to the app later does not
    see these requests.
    """

    ingest_app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.ingest_app is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in ingest.INGEST_PATHS
            # Mounted under a root path, routing is left to FastAPI.
            and not scope.get("root_path")
            and not self.root_path
        ):
            scope["app"] = self
            await self.ingest_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(rapport_: Rapport | None = None, *, settings: Settings | None = None) -> RapportApp:
    """An app around an already-open ``Rapport``, or one it opens from ``settings``.

    With ``settings`` the app owns the runtime: it opens and starts it on
    start-up and closes it on shutdown (this is what ``rapport serve`` runs).
    """
    if (rapport_ is None) == (settings is None):
        raise ValueError("pass exactly one of a Rapport or settings")
    # Inline processing waits for pauses in ingest (see ``ingest_priority``).
    activity = IngestActivity()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings is not None:
            runtime = await Rapport.open(settings)
            give_way_to_ingest(runtime, activity)
            await runtime.start()
            # What starting built (routes' caches, tasks) out of every collection too.
            freeze_heap()
            app.state.rapport = runtime
            try:
                yield
            finally:
                await runtime.close()
        else:
            yield

    app = RapportApp(
        title="Rapport",
        version=rapport.__version__,
        description=(
            "Segment-compatible event ingest, customer profiles and the admin API. "
            "Ingest takes a write key; `/api/*` takes a secret key as a Bearer token."
        ),
        lifespan=lifespan,
    )
    app.state.ingest_activity = activity
    if rapport_ is not None:
        app.state.rapport = rapport_
        give_way_to_ingest(rapport_, activity)
    install_error_handlers(app)
    app.add_middleware(CORSMiddleware, **CORS_OPTIONS)
    app.ingest_app = ServerErrorMiddleware(CORSMiddleware(ingest.serve_ingest, **CORS_OPTIONS))
    app.include_router(ingest.router)
    # Before profiles: its catch-all /api/profiles/{ref:path} would take .../inbox.
    app.include_router(inbox_router)
    app.include_router(messages_router)  # before profiles too: .../messages
    app.include_router(profiles.router)
    app.include_router(conditions.router)
    app.include_router(segments.router)
    app.include_router(computed_traits_router)
    app.include_router(journeys_router)
    app.include_router(business_events_router)
    app.include_router(templates.router)
    app.include_router(code_pools_router)
    app.include_router(policy_router)
    app.include_router(message_links_router)

    @app.get("/healthz", tags=["operations"])
    async def healthz(request: Request) -> Response:
        runtime: Rapport = request.app.state.rapport
        return JSONResponse(
            {
                "status": "ok",
                "version": rapport.__version__,
                "processed_offset": runtime.processor.processed_offset,
                "lag": runtime.lag,
            }
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=True)
    async def metrics(request: Request) -> Response:
        runtime: Rapport = request.app.state.rapport
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
