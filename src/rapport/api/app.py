"""The HTTP application: Segment-compatible ingest, admin API, health, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

import rapport
from rapport.api import ingest, profiles
from rapport.api.errors import install_error_handlers
from rapport.runtime.service import Rapport
from rapport.settings import Settings


def create_app(rapport_: Rapport | None = None, *, settings: Settings | None = None) -> FastAPI:
    """An app around an already-open ``Rapport``, or one it opens from ``settings``.

    With ``settings`` the app owns the runtime: it opens and starts it on
    start-up and closes it on shutdown (this is what ``rapport serve`` runs).
    """
    if (rapport_ is None) == (settings is None):
        raise ValueError("pass exactly one of a Rapport or settings")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings is not None:
            runtime = await Rapport.open(settings)
            await runtime.start()
            app.state.rapport = runtime
            try:
                yield
            finally:
                await runtime.close()
        else:
            yield

    app = FastAPI(
        title="Rapport",
        version=rapport.__version__,
        description=(
            "Segment-compatible event ingest, customer profiles and the admin API. "
            "Ingest takes a write key; `/api/*` takes a secret key as a Bearer token."
        ),
        lifespan=lifespan,
    )
    if rapport_ is not None:
        app.state.rapport = rapport_
    install_error_handlers(app)
    # Browsers post events from any shop's pages; echoing the origin (rather
    # than "*") keeps requests made with credentials working too.
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=".*",
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        max_age=86400,
    )
    app.include_router(ingest.router)
    app.include_router(profiles.router)

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
