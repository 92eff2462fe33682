"""Helpers of the service tests: real servers (uvicorn on loopback, redis-server on a free
port) and the offline answers that the service must give."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from starlette.routing import Match

from nextclick.models import load_model
from nextclick.serving.app import ServeSettings, create_app
from nextclick.serving.schemas import ErrorBody

#: Routes that answer something other than a response model: text, HTML, the API's own docs.
NOT_CHECKED = {"/metrics", "/demo", "/openapi.json", "/docs", "/redoc"}


class ResponseSchemas:
    """Checks every JSON response of an app against the model its route declares: the
    response model for 2xx, the error body for anything else. Extra fields fail (the models
    forbid them), so the routes cannot send what the schema does not say."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.checked = 0

    def check(self, method: str, path: str, status: int, body: bytes) -> None:
        if path in NOT_CHECKED and status < 400:
            return
        route = self._route(method, path)
        if 200 <= status < 300:
            assert route is not None and route.response_model is not None, (method, path)
            model = route.response_model
        else:
            model = ErrorBody
        TypeAdapter(model).validate_json(body)
        self.checked += 1

    def _route(self, method: str, path: str) -> APIRoute | None:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        for route in self.app.routes:
            if isinstance(route, APIRoute) and route.matches(scope)[0] is Match.FULL:
                return route
        return None


def client(model_dir: Path, **settings: object) -> TestClient:
    """The service in process (use as a context manager, which runs its start-up); every
    response it receives is checked against its route's schema (:class:`ResponseSchemas`)."""
    app = create_app(ServeSettings(model_dir=str(model_dir), **settings))
    schemas = ResponseSchemas(app)

    def check(response: httpx.Response) -> None:
        response.read()
        schemas.check(response.request.method, response.request.url.path,
                      response.status_code, response.content)  # fmt: skip

    test_client = TestClient(app)
    test_client.event_hooks["response"].append(check)
    test_client.schemas = schemas  # type: ignore[attr-defined]
    return test_client


def expected(model_dir: Path, clicks: list, k: int, exclude: list | tuple = ()) -> list:
    """The offline answer: the saved model's own top-k (id, score) after the clicks."""
    return load_model(model_dir).recommend_ids(clicks, k, exclude)


def pairs(body: dict) -> list:
    return [(it["item_id"], it["score"]) for it in body["items"]]


def assert_same(got: list, want: list) -> None:
    """Same items in the same order, scores equal up to float32 rounding."""
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class RedisServer:
    """A throw-away redis-server (no persistence) on a free port; can be killed and restarted."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run `bash scripts/test-services.sh` "
                "(make test does) to install it"
            )
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, what="redis-server to answer")

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
