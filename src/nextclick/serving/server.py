"""``nextclick serve``: checks the settings, then runs uvicorn (one or several processes)."""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path

import torch
from fastapi import FastAPI

from nextclick.errors import ConfigError
from nextclick.serving.app import SETTINGS_ENV, ServeSettings, create_app
from nextclick.serving.engine import Engine
from nextclick.serving.store import SessionStore, open_store

#: Seconds an idle keep-alive connection stays open. Longer than clients keep idle
#: connections (httpx: 5 s) and than load balancers' idle timeouts (typically 60 s), so the
#: server never closes a connection just as a client sends a click on it, a race the client
#: sees as a dropped request.
KEEP_ALIVE_SECONDS = 75


async def _check(store: SessionStore) -> None:
    """Fail at once, with one line, when the session store cannot be reached."""
    try:
        await store.ping()
    finally:
        await store.close()


def serve(
    model_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    state: str = "memory",
    admin_token: str | None = None,
    ttl: float = 1800.0,
    session_memory_mb: int = 1024,
) -> None:
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected an integer >= 1")
    if workers > 1 and state in ("", "memory"):
        raise ConfigError(
            f"--workers {workers} needs a session store shared by the processes: "
            "add --state redis://HOST:PORT (the in-process store would split sessions)"
        )
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: expected 1..65535")
    if ttl <= 0 or session_memory_mb <= 0:
        raise ConfigError("--session-ttl and --session-memory must be > 0")
    settings = ServeSettings(
        model_dir=str(model_dir), state=state, admin_token=admin_token, ttl=ttl,
        max_session_bytes=session_memory_mb << 20,
    )  # fmt: skip
    engine = Engine.load(model_dir)  # a bad directory fails here, with one line
    store = open_store(state, ttl, settings.max_session_bytes)  # so does a bad --state
    asyncio.run(_check(store))
    options = dict(host=host, port=port, log_level="warning", access_log=False,
                   timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_SECONDS)  # fmt: skip
    if workers == 1:
        app = create_app(settings, engine)
        _process_settings()
        uvicorn.run(app, **options)
        return
    os.environ[SETTINGS_ENV] = settings.to_json()
    uvicorn.run("nextclick.serving.server:worker_app", factory=True, workers=workers, **options)


def _process_settings() -> None:
    """Once the model is loaded: one torch thread (the model's passes are small, and a second
    thread would only fight the event loop for the other core), and every object made so far
    (libraries, model) moved out of the garbage collector's sight, so that its full passes
    do not walk them again and again while requests wait."""
    torch.set_num_threads(1)
    gc.collect()
    gc.freeze()


def worker_app() -> FastAPI:
    """Factory for uvicorn worker processes: the settings come in an environment variable."""
    app = create_app(ServeSettings.from_json(os.environ[SETTINGS_ENV]))
    _process_settings()
    return app
