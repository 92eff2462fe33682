"""The HTTP service: ``create_app`` puts the routes, the session service, the metrics and the
error handlers together.

Every route answers JSON; errors are ``{"error": "..."}`` with a 4xx status for the caller's
mistakes and 503 when the session store is unreachable. A request keeps the model it started
with, so a reload never changes the model under a request in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextclick.serving.engine import Engine
from nextclick.serving.middleware import BodyLimit, Metrics, RequestMetrics
from nextclick.serving.routes import TOKEN_ENV, HTTPError, router
from nextclick.serving.service import BadModel, Conflict, SessionService
from nextclick.serving.store import RedisStore, StoreUnavailable, open_store

#: Where ``nextclick serve --workers N`` hands the settings to its worker processes.
SETTINGS_ENV = "NEXTCLICK_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    """How ``nextclick serve`` runs (also passed to worker processes as JSON)."""

    model_dir: str
    state: str | None = None  # None/"memory" or redis://...
    admin_token: str | None = None
    ttl: float = 1800.0  # seconds of inactivity before a session expires
    max_session_bytes: int = 1 << 30  # in-process store's memory bound
    max_body_bytes: int = 64 * 1024
    max_batch: int = 256  # requests per round through the model
    conflict_seconds: float = 10.0  # how long a click is redone while others write its session

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """The service for ``settings`` (``engine``: an already loaded model, else loaded here)."""
    engine = engine or Engine.load(settings.model_dir)
    metrics = Metrics()
    metrics.set_model(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = open_store(settings.state, settings.ttl, settings.max_session_bytes)
        service = SessionService(engine, store, max_batch=settings.max_batch,
                                 conflict_seconds=settings.conflict_seconds,
                                 on_round=metrics.count_round)  # fmt: skip
        service.on_reload = metrics.set_model
        app.state.service = service
        follower = None
        if isinstance(store, RedisStore):
            follower = asyncio.get_running_loop().create_task(service.follow_reloads(store))
        yield
        if follower is not None:
            follower.cancel()
        await service.close()

    app = FastAPI(
        title="nextclick",
        summary="Session-based recommendations: what will this shopper click next?",
        version=engine.version,
        lifespan=lifespan,
        routes=list(router.routes),  # the routes themselves: no nested router to walk through
        # The service keeps its own Prometheus metrics; FastAPI's OpenTelemetry hooks would
        # cost every request a check of the global providers.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.metrics = metrics
    app.state.admin_token = settings.admin_token or os.environ.get(TOKEN_ENV) or None
    _error_handlers(app)
    app.add_middleware(BodyLimit, max_body=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts the 413s too
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": "..."}``: the service's own, the framework's, validation."""
    statuses = {HTTPError: None, Conflict: 409, BadModel: 400, StoreUnavailable: 503}
    for kind, status in statuses.items():

        async def handler(request: Request, exc: Exception, status: int | None = status
                          ) -> JSONResponse:  # fmt: skip
            code = exc.status if isinstance(exc, HTTPError) else status
            return JSONResponse({"error": str(exc)}, status_code=code)

        app.add_exception_handler(kind, handler)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": "request body is not valid JSON"}, status_code=400)
        # Leave out the names pydantic gives the members of a union ("constrained-str").
        where = ".".join(str(part) for part in first.get("loc", ())
                         if not (isinstance(part, str) and ("-" in part or "[" in part)))
        if where == "body" and first.get("type") in ("model_attributes_type", "dict_type"):
            message = "expected a JSON object (sent with Content-Type: application/json)"
            return JSONResponse({"error": f"body: {message}"}, status_code=422)
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        return JSONResponse({"error": f"{where}: {message}"}, status_code=422)

