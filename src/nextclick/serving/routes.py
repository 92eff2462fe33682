"""The HTTP routes: each parses its request, calls the :class:`SessionService`, and answers
JSON in the shape of its response model (:mod:`nextclick.serving.schemas`)."""

from __future__ import annotations

import hmac
import os
from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nextclick.errors import NextclickError
from nextclick.serving import schemas as s
from nextclick.serving.engine import Answer, Engine, Op
from nextclick.serving.middleware import Metrics
from nextclick.serving.service import SessionService
from nextclick.serving.store import RedisStore, StoreUnavailable

TOKEN_ENV = "NEXTCLICK_ADMIN_TOKEN"

Session = Annotated[str, PathParam(pattern=s.SESSION_ID, description="opaque session id")]


class HTTPError(NextclickError):
    """A request the service refuses: answered ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": s.ErrorBody} for status in statuses}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _items(answer: Answer) -> list[dict[str, Any]]:
    return [{"item_id": i, "score": v} for i, v in zip(answer.item_ids, answer.scores, strict=True)]


def _service(request: Request) -> SessionService:
    return request.app.state.service


router = APIRouter()


@router.post("/v1/sessions/{session_id}/events", response_model=s.ClickAnswer,
             responses=_errors(400, 409, 413, 422, 503),
             summary="Record a click, get recommendations")  # fmt: skip
async def post_event(session_id: Session, body: s.ClickBody, request: Request) -> Response:
    service = _service(request)
    engine = service.engine
    exclude = frozenset(engine.indices(body.exclude))
    op = Op(min(body.k, engine.n_items), body.item_id, body.event_id, exclude, body.exclude_seen)
    answer = await service.click(session_id, op)
    return _json({"session_id": session_id, "items": _items(answer),
                  "model_version": engine.version,
                  "clicks": answer.record.clicks, "unknown_item": answer.unknown_item,
                  "duplicate": answer.duplicate})  # fmt: skip


@router.get("/v1/sessions/{session_id}/recommendations", response_model=s.SessionAnswer,
            responses=_errors(409, 422, 503),
            summary="Current recommendations, without a click")  # fmt: skip
async def get_recommendations(
    session_id: Session, request: Request, k: Annotated[int, Query(ge=1, le=s.MAX_K)] = 20,
    exclude_seen: bool = False,
) -> Response:  # fmt: skip
    service = _service(request)
    engine = service.engine
    answer = await service.click(session_id, Op(min(k, engine.n_items), exclude_seen=exclude_seen))
    return _json({"session_id": session_id, "items": _items(answer),
                  "model_version": engine.version,
                  "clicks": answer.record.clicks})  # fmt: skip


@router.get("/v1/sessions/{session_id}", response_model=s.SessionView,
            responses=_errors(404, 422, 503), summary="A session's recent clicks")  # fmt: skip
async def get_session(session_id: Session, request: Request) -> Response:
    record = await _service(request).session(session_id)
    if record is None:
        raise HTTPError(404, f"no session {session_id!r}")
    return _json({"session_id": session_id, "clicks": record.clicks, "items": record.items,
                  "state_version": record.version})  # fmt: skip


@router.delete("/v1/sessions/{session_id}", response_model=s.Deleted,
               responses=_errors(404, 422, 503), summary="End a session")  # fmt: skip
async def delete_session(session_id: Session, request: Request) -> Response:
    if not await _service(request).end(session_id):
        raise HTTPError(404, f"no session {session_id!r}")
    return _json({"session_id": session_id, "deleted": True})


@router.post("/v1/recommend", response_model=s.PrefixAnswer | s.PrefixesAnswer,
             responses=_errors(400, 413, 422, 503),
             summary="Recommendations for given session prefixes (stateless)")  # fmt: skip
async def recommend(body: s.RecommendBody, request: Request) -> Response:
    prefixes = [body.items] if body.items is not None else body.prefixes or []
    engine, answers = await _service(request).recommend(prefixes, body.k, body.exclude_seen)
    results = [
        {"items": _items(answer), "model_version": engine.version,
         "unknown_items": [i for i in prefix if engine.lookup(i) is None]}
        for prefix, answer in zip(prefixes, answers, strict=True)
    ]  # fmt: skip
    if body.items is not None:
        return _json(results[0])
    return _json({"results": results, "model_version": engine.version})


@router.get("/v1/items", response_model=s.PopularItems, responses=_errors(422),
            summary="The most clicked items of the training data")  # fmt: skip
async def popular_items(request: Request,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> Response:  # fmt: skip
    engine: Engine = _service(request).engine
    return _json({"items": [{"item_id": i, "clicks": n} for i, n in engine.popular(limit)],
                  "n_items": engine.n_items, "model": engine.model.name,
                  "model_version": engine.version})  # fmt: skip


@router.post("/v1/admin/reload", response_model=s.Reloaded,
             responses=_errors(400, 401, 403, 413, 422, 503),
             summary="Swap in a model directory (bearer token)")  # fmt: skip
async def reload(request: Request,
                 body: Annotated[s.ReloadBody | None, Body()] = None) -> Response:  # fmt: skip
    _check_token(request)
    service = _service(request)
    directory = (body.model_dir if body else None) or str(service.engine.directory)
    old, new = await service.reload(directory)
    answer: dict[str, Any] = {"previous_version": old, "model_version": new,
                              "model_dir": directory}  # fmt: skip
    if isinstance(service.store, RedisStore):
        try:
            await service.store.announce_reload(directory)
            answer["announced"] = True
        except StoreUnavailable as exc:  # this replica did reload; the others did not
            answer["announced"] = False
            answer["warning"] = f"other replicas not told: {exc}"
    return _json(answer)


def _check_token(request: Request) -> None:
    token = request.app.state.admin_token
    if token is None:
        raise HTTPError(403, f"admin endpoints are disabled: start the service with "
                             f"--admin-token or {TOKEN_ENV}")  # fmt: skip
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise HTTPError(401, "admin endpoints need 'Authorization: Bearer <token>'")


@router.get("/healthz", response_model=s.Health, summary="The process is up")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get("/readyz", response_model=s.Ready, responses=_errors(503),
            summary="Model loaded and session store reachable")  # fmt: skip
async def readyz(request: Request) -> Response:
    service = _service(request)
    await service.store.ping()
    return _json({"status": "ready", "model_version": service.engine.version,
                  "state": service.store.description, "pid": os.getpid()})  # fmt: skip


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    try:
        metrics.sessions.set(await _service(request).store.count())
    except StoreUnavailable:
        pass  # the gauge keeps its last value; /readyz tells that the store is down
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/demo", response_class=HTMLResponse, include_in_schema=False)
async def demo() -> HTMLResponse:
    page = resources.files("nextclick.serving").joinpath("demo.html").read_text()
    return HTMLResponse(page)
