"""`create_app(settings)`: the FastAPI service wired to its SQL database, InfluxDB and the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.responses import JSONResponse

from infrawatch import __version__, core
from infrawatch.api import db, security
from infrawatch.api.deps import AppState
from infrawatch.api.routers import (
    alerts,
    apikeys,
    auth,
    ingest,
    models,
    network,
    readings,
    reports,
    status,
    users,
)
from infrawatch.api.routers import registry as registry_routes
from infrawatch.api.schemas import ErrorOut
from infrawatch.config import ConfigError, Settings
from infrawatch.detection.registry import ActiveModels, ModelRegistry
from infrawatch.ingest.influx_admin import InfluxError

PREFIX = "/api/v1"
ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 503)}


def _pipelines(settings: Settings, registry: ModelRegistry) -> tuple[core.Pipeline, ActiveModels]:
    a = settings.api
    limiter = core.TokenBucket(
        rate_per_s=a.ingest_rate_per_s, burst=a.ingest_burst, max_keys=a.ingest_max_keys
    )
    try:
        window = registry.window() or settings.window
    except Exception:  # a broken registry must not stop the service; ingest stores without verdicts
        window = settings.window
    # HTTP readings are judged on arrival: a client cannot claim old timestamps to pass the bucket
    pipeline = core.Pipeline(window=window, limiter=limiter, limit_clock="arrival")
    active = ActiveModels(registry)
    try:
        active.refresh(pipeline)
    except Exception:
        active.fingerprint = None
    return pipeline, active


def create_app(settings: Settings, *, migrate: bool = True) -> FastAPI:
    a = settings.api
    engine = db.make_engine(a.database_url(settings.run_dir))
    if migrate:
        db.migrate(engine)
    try:
        webhook: str | None = a.webhook_key()
    except ConfigError:
        webhook = None  # the receiver answers 503 until a token is configured
    registry = ModelRegistry(settings.model_dir)
    pipeline, active = _pipelines(settings, registry)
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=db.session_factory(engine),
        jwt_key=a.jwt_key(),
        webhook_token=webhook,
        registry=registry,
        passwords=security.Passwords(a.argon2_time_cost, a.argon2_memory_kib),
        pipeline=pipeline,
        bare_pipeline=core.Pipeline(window=2, limiter=None, limit_clock="arrival"),
        models=active,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = FastAPI(
        title="infrawatch",
        version=__version__,
        description="Admin, RBAC, sensor registry, read API, HTTP ingest, alerts and reports (DESIGN.md §6).",
        lifespan=lifespan,
    )
    app.state.infrawatch = state
    for r in (
        auth,
        users,
        apikeys,
        registry_routes,
        readings,
        ingest,
        alerts,
        reports,
        network,
        models,
        status,
    ):
        app.include_router(r.router, prefix=PREFIX, responses=ERRORS)  # type: ignore[arg-type]
    app.include_router(status.health_router)

    @app.exception_handler(InfluxError)
    async def influx_down(_: Request, e: InfluxError) -> JSONResponse:
        return JSONResponse({"detail": f"InfluxDB: {e}"}, status_code=503)

    return app


def route_table(app: FastAPI) -> list[Any]:
    """Every route the app serves, flattened through included routers (FastAPI ≥ 0.13x keeps
    included routers as nodes of `app.routes`; `iter_route_contexts` walks them)."""
    walk = getattr(routing, "iter_route_contexts", None)
    return list(walk(app.routes)) if walk is not None else list(app.routes)
