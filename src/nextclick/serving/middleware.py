"""The service's Prometheus metrics, and two pure ASGI middlewares: request metrics and the
request body size limit."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nextclick.serving.engine import Engine
from nextclick.serving.service import Timings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
        self.rounds = Counter("nextclick_model_batches", "Rounds (passes through the model)",
                              registry=self.registry)  # fmt: skip
        self.jobs = Counter("nextclick_model_batched_jobs", "Requests answered by those rounds",
                            registry=self.registry)  # fmt: skip
        self.phase = Counter("nextclick_round_seconds", "Seconds spent in rounds, by phase",
                             ["phase"], registry=self.registry)  # fmt: skip
        self._phases = [self.phase.labels(p) for p in ("store_read", "model", "store_write")]

    def count_round(self, timings: Timings) -> None:
        self.rounds.inc()
        self.jobs.inc(timings.jobs)
        for counter, seconds in zip(self._phases, (timings.store_read, timings.model,
                                                   timings.store_write), strict=True):  # fmt: skip
            counter.inc(seconds)

    def set_model(self, engine: Engine) -> None:
        self.model.clear()
        self.model.labels(engine.version, engine.model.name).set(1)


class RequestMetrics:
    """Counts requests by route template, method and status, and times them."""

    METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in self.METHODS else "other"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


class BodyLimit:
    """Answers 413 to a body over ``max_body`` bytes, whether it declares its length or
    comes in chunks (then read here, within the limit, and handed on whole)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body
        self.too_big = orjson.dumps({"error": f"request body over {max_body} bytes"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body:
                await self._refuse(send)
            else:
                await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await self._refuse(send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self.too_big)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": self.too_big})
