"""Where the service keeps its sessions: in the process, or in Redis shared by replicas.

Both stores offer the same asynchronous interface. A write is a compare-and-set on the
record's ``token``, a random string that changes with every write: it succeeds only if the
session still holds the token the writer read (or, for a new session, none), so two replicas
handling clicks of one session at the same time cannot lose either (the loser reads again
and redoes its step), even if the session was deleted and created again in between.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from nextclick.errors import NextclickError
from nextclick.serving.engine import SessionRecord


class StoreUnavailable(NextclickError):
    """The session store cannot be reached (the service answers 503)."""


class SessionStore(ABC):
    """Sessions by id, each expiring ``ttl`` seconds after its last use."""

    description: str

    @abstractmethod
    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's record (refreshing its expiry), or None if there is none."""

    @abstractmethod
    async def put(self, session_id: str, record: SessionRecord, expected: str | None) -> bool:
        """Store ``record`` if the session holds token ``expected`` (None: absent)."""

    @abstractmethod
    async def delete(self, session_id: str) -> bool:
        """End a session; False if there was none."""

    @abstractmethod
    async def count(self) -> int:
        """Sessions held."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""


class MemoryStore(SessionStore):
    """In-process store: least recently used sessions go first when the records' bytes
    exceed ``max_bytes``, and any session unused for ``ttl`` seconds expires."""

    def __init__(self, ttl: float = 1800.0, max_bytes: int = 1 << 30) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.description = "memory"
        self._records: OrderedDict[str, tuple[SessionRecord, float, int]] = OrderedDict()
        self._bytes = 0

    def _expire(self, now: float) -> None:
        while self._records:
            session_id, (_, used, _) = next(iter(self._records.items()))
            if now - used < self.ttl and self._bytes <= self.max_bytes:
                break
            self._drop(session_id)

    def _drop(self, session_id: str) -> bool:
        entry = self._records.pop(session_id, None)
        if entry is not None:
            self._bytes -= entry[2]
        return entry is not None

    async def get(self, session_id: str) -> SessionRecord | None:
        now = time.monotonic()
        self._expire(now)
        entry = self._records.get(session_id)
        if entry is None:
            return None
        self._records[session_id] = (entry[0], now, entry[2])
        self._records.move_to_end(session_id)
        return entry[0]

    async def put(self, session_id: str, record: SessionRecord, expected: str | None) -> bool:
        entry = self._records.get(session_id)
        if (None if entry is None else entry[0].token) != expected:
            return False
        self._drop(session_id)
        size = _record_size(record, session_id)
        self._records[session_id] = (record, time.monotonic(), size)
        self._bytes += size
        self._expire(time.monotonic())
        return True

    async def delete(self, session_id: str) -> bool:
        return self._drop(session_id)

    async def count(self) -> int:
        self._expire(time.monotonic())
        return len(self._records)

    async def ping(self) -> None:
        return None  # always there

    async def close(self) -> None:
        self._records.clear()
        self._bytes = 0


def _record_size(record: SessionRecord, session_id: str) -> int:
    """Approximate bytes a record holds in this process (objects, strings, state)."""
    return 400 + len(session_id) + 36 * len(record.items) + len(record.state)


# Compare-and-set of a session hash {token, data}; an absent session has the token "".
_CAS = """
local token = redis.call('HGET', KEYS[1], 'token') or ''
if token ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'data', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
#: Redis errors that mean "cannot serve now" (full, read-only replica, loading, failover).
_UNAVAILABLE = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "CLUSTERDOWN")


class RedisStore(SessionStore):
    """Sessions in Redis (``redis://host:port/db``), shared by every replica."""

    def __init__(self, url: str, ttl: float = 1800.0, prefix: str = "nextclick:") -> None:
        import redis.asyncio as redis

        self.url = url
        self.description = url
        self.ttl = max(1, math.ceil(ttl))  # EXPIRE 0 would delete the session at once
        self.prefix = prefix
        self._count: tuple[float, int] | None = None  # (when, count): SCAN at most every 10 s
        try:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=5
            )
        except ValueError as exc:
            raise NextclickError(f"--state {url!r}: {exc}") from None
        self._cas = self._redis.register_script(_CAS)

    async def _call(self, coroutine: Awaitable[Any]) -> Any:
        import redis.exceptions

        try:
            return await coroutine
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"session store {self.url} unavailable: {exc}") from None
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE):
                raise StoreUnavailable(f"session store {self.url} unavailable: {exc}") from None
            raise

    async def get(self, session_id: str) -> SessionRecord | None:
        key = self._session_key(session_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(key, "data")
            pipe.expire(key, self.ttl)
            data, _ = await self._call(pipe.execute())
        return None if data is None else SessionRecord.from_bytes(data)

    async def put(self, session_id: str, record: SessionRecord, expected: str | None) -> bool:
        key = self._session_key(session_id)
        args = [expected or "", record.token, record.to_bytes(), self.ttl]
        return bool(await self._call(self._cas(keys=[key], args=args)))

    async def delete(self, session_id: str) -> bool:
        return bool(await self._call(self._redis.delete(self._session_key(session_id))))

    async def count(self) -> int:
        now = time.monotonic()
        if self._count is None or now - self._count[0] > 10.0:
            self._count = (now, await self._call(self._scan_count()))
        return self._count[1]

    async def _scan_count(self) -> int:
        n = 0
        async for _ in self._redis.scan_iter(match=self._session_key("*"), count=1000):
            n += 1
        return n

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def announce_reload(self, directory: str) -> None:
        """Make ``directory`` every replica's model: kept in a key (for replicas that start
        or reconnect later), and announced on a channel (for the others, at once)."""
        await self._call(self._redis.set(self._model_key, directory))
        await self._call(self._redis.publish(self._model_key, directory))

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    @property
    def _model_key(self) -> str:
        return f"{self.prefix}model_dir"

    async def model_directories(self) -> AsyncIterator[str]:
        """The announced model directory: now (if any), then at each announcement (runs
        until cancelled or Redis fails)."""
        pubsub = self._redis.pubsub()
        try:
            await self._call(pubsub.subscribe(self._model_key))
            current = await self._call(self._redis.get(self._model_key))
            if current is not None:
                yield current.decode()
            while True:
                message = await self._call(
                    pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                )
                if message is not None:
                    yield message["data"].decode()
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(url: str | None, ttl: float, max_bytes: int) -> SessionStore:
    """``None`` or ``memory`` -> MemoryStore; ``redis://...`` -> RedisStore."""
    if url in (None, "", "memory"):
        return MemoryStore(ttl, max_bytes)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, ttl)
    raise NextclickError(f"--state {url!r}: expected memory or redis://HOST:PORT[/DB]")
