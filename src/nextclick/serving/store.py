"""Where the service keeps its sessions: in the process, or in Redis shared by replicas.

A session is a :class:`SessionRecord`. Both stores offer the same asynchronous interface,
batched: the service reads and writes every session of a round of requests at once (one
Redis round trip each way). A write is a compare-and-set on the record's ``token``, a string
that changes with every write: it succeeds only if the session still holds the token the
writer read (or, for a new session, none), so two replicas handling clicks of one session at
the same time cannot lose either (the loser reads again and redoes its step), even if the
session was deleted and created again in between.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from nextclick.errors import NextclickError

#: Clicks (and client event ids) a session keeps: its recent history (its first clicks for a
#: model whose ``kept_clicks`` is ``first``), replayed after a model reload, and the ids that
#: make a retried click count once.
MAX_ITEMS = 50


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the service keeps of one session."""

    items: tuple[Any, ...] = ()  # raw ids of the kept clicks, oldest first
    state: bytes = b""  # the model's packed state after ``items`` (models with keeps_state)
    version: str = ""  # model version that made ``state``
    clicks: int = 0  # clicks recorded, unknown items included
    token: str = ""  # changes with every write: what a compare-and-set compares
    events: tuple[str, ...] = ()  # client event ids of the recent clicks

    def to_bytes(self) -> bytes:
        header = orjson.dumps([self.items, self.version, self.clicks, self.token, self.events])
        return header + b"\n" + self.state

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionRecord:
        header, _, state = data.partition(b"\n")
        items, version, clicks, token, events = orjson.loads(header)
        return cls(tuple(items), state, version, clicks, token, tuple(events))


_tokens = itertools.count()
_TOKEN_PREFIX = os.urandom(6).hex()


def new_token() -> str:
    """A token no other write of any process has used (random per process, then counted)."""
    return f"{_TOKEN_PREFIX}{next(_tokens):x}"


class StoreUnavailable(NextclickError):
    """The session store cannot be reached (the service answers 503)."""


Write = tuple[str, SessionRecord, str | None]  # (session id, record, expected token)


class SessionStore(ABC):
    """Sessions by id, each expiring ``ttl`` seconds after its last use."""

    description: str

    @abstractmethod
    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        """The sessions' records (refreshing their expiry), None where there is none."""

    @abstractmethod
    async def put_many(self, writes: Sequence[Write]) -> list[bool]:
        """Store each record if its session holds the expected token (None: absent)."""

    async def get(self, session_id: str) -> SessionRecord | None:
        return (await self.get_many([session_id]))[0]

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
    exceed ``max_bytes``, and any session unused for ``ttl`` seconds expires.

    Records are kept serialised, as in Redis: bytes are invisible to Python's cyclic garbage
    collector, whose full passes over a million small objects would stall the service.
    """

    def __init__(self, ttl: float = 1800.0, max_bytes: int = 1 << 30) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.description = "memory"
        # session id -> (record bytes, last use, token, bytes counted)
        self._records: OrderedDict[str, tuple[bytes, float, str, int]] = OrderedDict()
        self._bytes = 0

    def _expire(self, now: float) -> None:
        while self._records:
            session_id, (_, used, _, _) = next(iter(self._records.items()))
            if now - used < self.ttl and self._bytes <= self.max_bytes:
                break
            self._drop(session_id)

    def _drop(self, session_id: str) -> bool:
        entry = self._records.pop(session_id, None)
        if entry is not None:
            self._bytes -= entry[3]
        return entry is not None

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        now = time.monotonic()
        self._expire(now)
        out: list[SessionRecord | None] = []
        for session_id in session_ids:
            entry = self._records.get(session_id)
            if entry is None:
                out.append(None)
                continue
            self._records[session_id] = (entry[0], now, entry[2], entry[3])
            self._records.move_to_end(session_id)
            out.append(SessionRecord.from_bytes(entry[0]))
        return out

    async def put_many(self, writes: Sequence[Write]) -> list[bool]:
        now = time.monotonic()
        done = []
        for session_id, record, expected in writes:
            entry = self._records.get(session_id)
            if (None if entry is None else entry[2]) != expected:
                done.append(False)
                continue
            self._drop(session_id)
            data = record.to_bytes()
            # The bytes, the id, and the entry's objects (tuple, float, token, dict slot).
            size = len(data) + len(session_id) + len(record.token) + 250
            self._records[session_id] = (data, now, record.token, size)
            self._bytes += size
            done.append(True)
        self._expire(now)
        return done

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

    async def get_many(self, session_ids: Sequence[str]) -> list[SessionRecord | None]:
        if not session_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                key = self._session_key(session_id)
                pipe.hget(key, "data")
                pipe.expire(key, self.ttl)
            replies = await self._call(pipe.execute())
        return [None if data is None else SessionRecord.from_bytes(data) for data in replies[::2]]

    async def put_many(self, writes: Sequence[Write]) -> list[bool]:
        if not writes:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for session_id, record, expected in writes:
                args = [expected or "", record.token, record.to_bytes(), self.ttl]
                await self._cas(keys=[self._session_key(session_id)], args=args, client=pipe)
            return [bool(done) for done in await self._call(pipe.execute())]

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
