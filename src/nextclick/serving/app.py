"""The HTTP service: FastAPI routes over an :class:`Engine`, a session store and metrics.

Every route answers JSON; errors are ``{"error": "..."}`` with a 4xx status for the caller's
mistakes and 503 when the session store is unreachable. A request pins the engine it started
with, so a model reload never changes the model under a request in flight.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextclick.errors import NextclickError
from nextclick.serving.engine import (
    Answer,
    Engine,
    Job,
    MicroBatcher,
    SessionRecord,
    directory_version,
)
from nextclick.serving.store import RedisStore, StoreUnavailable, open_store

log = logging.getLogger(__name__)

SETTINGS_ENV = "NEXTCLICK_SERVE_SETTINGS"
TOKEN_ENV = "NEXTCLICK_ADMIN_TOKEN"
SESSION_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
#: Compare-and-set attempts per click before answering 409 (only replicas racing on one
#: session ever retry).
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class ServeSettings:
    """How ``nextclick serve`` runs (also passed to worker processes as JSON)."""

    model_dir: str
    state: str | None = None  # None/"memory" or redis://...
    admin_token: str | None = None
    ttl: float = 1800.0  # seconds of inactivity before a session expires
    max_session_bytes: int = 1 << 30  # in-process store's memory bound
    max_body_bytes: int = 64 * 1024
    max_batch: int = 128

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


ItemId = int | str
MAX_K = 1000
K = Annotated[int, Field(ge=1, le=MAX_K)]
Session = Annotated[str, PathParam(pattern=SESSION_ID, description="opaque session id")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClickBody(Strict):
    item_id: ItemId
    k: K = 20
    exclude_seen: StrictBool = False
    exclude: list[ItemId] = Field(default_factory=list, max_length=1000)


class RecommendBody(Strict):
    items: list[ItemId] | None = Field(default=None, max_length=1000)
    prefixes: list[list[ItemId]] | None = Field(default=None, max_length=256)
    k: K = 20
    exclude_seen: StrictBool = False


class ReloadBody(Strict):
    model_dir: str | None = None


class ScoredItem(BaseModel):
    item_id: ItemId
    score: float


class Recommendations(BaseModel):
    items: list[ScoredItem]
    model_version: str


class SessionAnswer(Recommendations):
    session_id: str
    clicks: int = Field(description="clicks recorded in the session")


class ClickAnswer(SessionAnswer):
    unknown_item: bool = Field(description="the item is not in the model: state not advanced")


class PrefixAnswer(Recommendations):
    unknown_items: list[ItemId]


class PrefixesAnswer(BaseModel):
    results: list[PrefixAnswer]
    model_version: str


def _json(body: dict[str, Any], status: int = 200) -> Response:
    """A JSON response built directly: the routes' answers skip FastAPI's re-validation."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return Response(data, status_code=status, media_type="application/json")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class Metrics:
    """Prometheus metrics of one service process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("nextclick_requests", "HTTP requests",
                                ["route", "method", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram(
            "nextclick_request_seconds", "Request latency", ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.sessions = Gauge("nextclick_sessions", "Sessions held", registry=self.registry)
        self.model = Gauge("nextclick_model_info", "Model in service (value 1)",
                           ["version", "model"], registry=self.registry)  # fmt: skip
        self.batches = Counter("nextclick_model_batches", "Passes through the model",
                               registry=self.registry)  # fmt: skip
        self.batched = Counter("nextclick_model_batched_jobs", "Jobs answered by those passes",
                               registry=self.registry)  # fmt: skip

    def count_batch(self, jobs: int) -> None:
        self.batches.inc()
        self.batched.inc(jobs)

    def set_model(self, engine: Engine) -> None:
        self.model.clear()
        self.model.labels(engine.version, engine.model.name).set(1)


class Limits:
    """Pure ASGI middleware: the request body size limit and the request metrics."""

    METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

    def __init__(self, app: Callable, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        too_big = {"error": f"request body over {self.max_body} bytes"}

        async def recording_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None:
                if not length.isdigit() or int(length) > self.max_body:
                    await _send_json(recording_send, 413, too_big)
                    return
                await self.app(scope, receive, recording_send)
                return
            # No length given (a chunked body): read it here, within the limit, and hand the
            # app the whole body at once.
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    await _send_json(recording_send, 413, too_big)
                    return
            sent = False

            async def replay() -> dict:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in self.METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


async def _send_json(send: Callable, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


class SessionLocks:
    """One asyncio lock per session id in use: clicks of one session run one at a time
    within a process (the store's compare-and-set covers other processes)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, session_id: str):
        lock, users = self._locks.get(session_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)


def _answer_json(session_id: str | None, engine: Engine, answer: Answer) -> dict[str, Any]:
    body: dict[str, Any] = {
        "items": [{"item_id": item, "score": score} for item, score in answer.items],
        "model_version": engine.version,
    }
    if session_id is not None:
        body = {"session_id": session_id, **body, "clicks": answer.record.clicks}
    return body


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """The service for ``settings`` (``engine``: an already loaded model, else loaded here)."""
    # One torch thread: the model's passes are small, and a second thread would only fight
    # the event loop for the other core.
    torch.set_num_threads(1)
    engine = engine or Engine.load(settings.model_dir)
    store = open_store(settings.state, settings.ttl, settings.max_session_bytes)
    metrics = Metrics()
    batcher = MicroBatcher(settings.max_batch, on_batch=metrics.count_batch)
    locks = SessionLocks()
    metrics.set_model(engine)
    current = {"engine": engine}
    token = settings.admin_token or os.environ.get(TOKEN_ENV) or None

    async def swap(directory: str) -> tuple[str, str]:
        try:
            new = await asyncio.to_thread(Engine.load, directory)
        except NextclickError as exc:
            raise HTTPError(400, f"cannot load model: {exc}") from None
        old = current["engine"]
        current["engine"] = new  # requests in flight keep the engine they started with
        metrics.set_model(new)
        log.warning("model %s -> %s (%s)", old.version, new.version, directory)
        return old.version, new.version

    async def follow_reloads(redis_store: RedisStore) -> None:
        """With Redis, every replica serves the model directory last announced by any of
        them: read at start and after each reconnection, then followed as announced."""
        while True:
            try:
                async for directory in redis_store.model_directories():
                    version = await asyncio.to_thread(directory_version, Path(directory))
                    if version != current["engine"].version:
                        await swap(directory)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following whatever one reload did
                log.warning("model directory channel: %s", exc)
            await asyncio.sleep(1.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        follower = None
        if isinstance(store, RedisStore):
            follower = asyncio.get_running_loop().create_task(follow_reloads(store))
        yield
        if follower is not None:
            follower.cancel()
        await store.close()
        batcher.close()

    app = FastAPI(
        title="nextclick",
        summary="Session-based recommendations: what will this shopper click next?",
        version=engine.version,
        lifespan=lifespan,
    )

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)  # fmt: skip

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": "request body is not valid JSON"}, status_code=400)
        where = ".".join(str(part) for part in first.get("loc", ()))
        if where == "body" and first.get("type") in ("model_attributes_type", "dict_type"):
            message = "expected a JSON object (sent with Content-Type: application/json)"
            return JSONResponse({"error": f"body: {message}"}, status_code=422)
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=422)

    def known(engine: Engine, ids: list[ItemId]) -> frozenset[int]:
        found = (engine.item_index(i) for i in ids)
        return frozenset(i for i in found if i is not None)

    async def click(session_id: str, item_id: ItemId | None, k: int, exclude: list[ItemId],
                    exclude_seen: bool) -> tuple[Engine, Answer, bool]:  # fmt: skip
        """Record a click (``item_id``; None: only look) and answer the recommendations."""
        engine = current["engine"]
        index = None if item_id is None else engine.item_index(item_id)
        unknown = item_id if item_id is not None and index is None else None
        banned = known(engine, exclude)
        async with locks.hold(session_id):
            for _ in range(MAX_ATTEMPTS):
                record = await store.get(session_id)
                job = Job(record or SessionRecord(), index, min(k, engine.n_items), banned,
                          exclude_seen, unknown)  # fmt: skip
                answer = await batcher.submit(engine, job)
                if item_id is None:
                    return engine, answer, False
                new = replace(answer.record, token=secrets.token_hex(8))
                if await store.put(session_id, new, record.token if record else None):
                    return engine, replace(answer, record=new), unknown is not None
        raise HTTPError(409, f"session {session_id!r} is changing too fast; retry")

    @app.post("/v1/sessions/{session_id}/events", response_model=ClickAnswer,
              summary="Record a click, get recommendations")  # fmt: skip
    async def post_event(session_id: Session, body: ClickBody) -> Response:
        engine, answer, unknown = await click(session_id, body.item_id, body.k, body.exclude,
                                              body.exclude_seen)  # fmt: skip
        return _json({**_answer_json(session_id, engine, answer), "unknown_item": unknown})

    @app.get("/v1/sessions/{session_id}/recommendations", response_model=SessionAnswer,
             summary="Current recommendations, without a click")  # fmt: skip
    async def get_recommendations(
        session_id: Session,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
        exclude_seen: bool = False,
    ) -> Response:
        engine, answer, _ = await click(session_id, None, k, [], exclude_seen)
        return _json(_answer_json(session_id, engine, answer))

    @app.get("/v1/sessions/{session_id}", summary="A session's recent clicks")
    async def get_session(session_id: Session) -> dict[str, Any]:
        record = await store.get(session_id)
        if record is None:
            raise HTTPError(404, f"no session {session_id!r}")
        return {"session_id": session_id, "clicks": record.clicks,
                "items": list(record.items),
                "state_version": record.version}  # fmt: skip

    @app.delete("/v1/sessions/{session_id}", summary="End a session")
    async def delete_session(session_id: Session) -> dict[str, Any]:
        async with locks.hold(session_id):
            if not await store.delete(session_id):
                raise HTTPError(404, f"no session {session_id!r}")
        return {"session_id": session_id, "deleted": True}

    @app.post("/v1/recommend", response_model=PrefixAnswer | PrefixesAnswer,
              summary="Recommendations for given session prefixes (stateless)")  # fmt: skip
    async def recommend(body: RecommendBody) -> Response:
        if (body.items is None) == (body.prefixes is None):
            raise HTTPError(422, "body: give either items (one prefix) or prefixes (a list)")
        engine = current["engine"]
        prefixes = [body.items] if body.items is not None else body.prefixes or []
        jobs = []
        for prefix in prefixes:
            found = (engine.item_index(i) for i in prefix)
            known_items = tuple(engine.item_id(i) for i in found if i is not None)
            record = SessionRecord(known_items)
            if engine.model.keeps_state and known_items:
                record = replace(record, version="replay")  # the engine rebuilds the state
            jobs.append(Job(record, None, min(body.k, engine.n_items), frozenset(),
                            body.exclude_seen))  # fmt: skip
        answers = await asyncio.gather(*(batcher.submit(engine, job) for job in jobs))
        results = [
            {**_answer_json(None, engine, answer),
             "unknown_items": [i for i in prefix if engine.item_index(i) is None]}
            for prefix, answer in zip(prefixes, answers, strict=True)
        ]  # fmt: skip
        if body.items is not None:
            return _json(results[0])
        return _json({"results": results, "model_version": engine.version})

    @app.get("/v1/items", summary="The most clicked items of the training data")
    async def items(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        engine = current["engine"]
        return {"items": [{"item_id": i, "clicks": n} for i, n in engine.popular(limit)],
                "n_items": engine.n_items, "model": engine.model.name,
                "model_version": engine.version}  # fmt: skip

    @app.post("/v1/admin/reload", summary="Swap in a model directory (bearer token)")
    async def reload(request: Request, body: Annotated[ReloadBody | None, Body()] = None
                     ) -> dict[str, Any]:  # fmt: skip
        if token is None:
            raise HTTPError(403, f"admin endpoints are disabled: start the service with "
                                 f"--admin-token or {TOKEN_ENV}")  # fmt: skip
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            raise HTTPError(401, "admin endpoints need 'Authorization: Bearer <token>'")
        directory = (body.model_dir if body else None) or str(current["engine"].directory)
        old, new = await swap(directory)
        answer: dict[str, Any] = {"previous_version": old, "model_version": new,
                                  "model_dir": directory}  # fmt: skip
        if isinstance(store, RedisStore):
            try:
                await store.announce_reload(directory)
                answer["announced"] = True
            except StoreUnavailable as exc:  # this replica did reload; the others did not
                answer["announced"] = False
                answer["warning"] = f"other replicas not told: {exc}"
        return answer

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Model loaded and session store reachable")
    async def readyz() -> dict[str, Any]:
        await store.ping()
        return {"status": "ready", "model_version": current["engine"].version,
                "state": store.description, "pid": os.getpid()}  # fmt: skip

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        try:
            metrics.sessions.set(await store.count())
        except StoreUnavailable:
            pass  # the gauge keeps its last value; /readyz tells that the store is down
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/demo", response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> HTMLResponse:
        page = resources.files("nextclick.serving").joinpath("demo.html").read_text()
        return HTMLResponse(page)

    app.add_middleware(Limits, max_body=settings.max_body_bytes, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: the settings come in an environment variable."""
    return create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]))
