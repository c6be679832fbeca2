"""The run log in Redis (``STREAM_STORE_URL=redis://...`` or ``rediss://``):
any instance can replay and tail a run another instance is running.

The run itself stays on the instance that started it, and its readers
there read the in-process log as without Redis (no extra cost per event).
Beside it, one task per run mirrors the log into Redis, a batch of events
per wake-up (one pipelined round trip), and holds the run's lease:

* ``sse:{token}:events``: a Redis Stream, entry ``0-<n>`` is event ``n``
  (field ``e``: the event as JSON), so "after event n" is plain ``XREAD``;
* ``sse:{token}:meta``: a hash (run id, and the terminal event's number
  once there is one);
* ``sse:{token}:lease``: set (with a TTL of ``lease_s``) while the running
  instance is alive and the run not finished; if it lapses, readers
  elsewhere end with ``error`` ``run_lost`` instead of hanging;
* ``sse:{token}:readers``: a sorted set of readers on other instances
  (score: when their presence expires). The running instance counts them
  when it refreshes the lease: a client reading elsewhere keeps the run
  from being cancelled when its own clients have left.

Every key expires: while the run goes, a little after its deadline; once
it ends, ``retention_s`` later.

On another instance, :meth:`RedisStore.open_run` builds a mirror
:class:`~streaming.runlog.Run` from the stream (``XRANGE``) and tails it
(``XREAD BLOCK``); responses read the mirror exactly as they read a local
run. Redis unreachable when a run starts: the app answers 503. Lost in the
middle of a run: the run and its local readers go on, the loss is logged,
and readers on other instances end with ``run_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import sys
import time
from typing import Any

import redis.asyncio as aioredis
from redis.credentials import CredentialProvider

from streaming.events import Error, StreamEvent
from streaming.runlog import MemoryRunStore, Producer, Run, StoreUnavailable

logger = logging.getLogger(__name__)

PREFIX = "sse:"
BLOCK_MS = 1000  # a tailer's XREAD BLOCK: also how often it checks the lease
CONNECT_TIMEOUT_S = 3.0
SOCKET_TIMEOUT_S = 5.0  # longer than BLOCK_MS: a Redis that stops answering is a failure, not a hang
ENTRA_RECYCLE_S = 30 * 60  # Entra ID tokens last 60-90 minutes
RUN_TTL_S = 3600  # keys of a running run expire this long after the last write (the deadline is shorter)


def _key(token: str, part: str) -> str:
    return f"{PREFIX}{token}:{part}"


def _event_types() -> dict[str, type[StreamEvent]]:
    """Every event class by name, wherever it is defined. A dataclass with
    ``slots=True`` replaces its class, and the replaced one may linger in
    ``__subclasses__()``: take the one its module exports."""
    found: dict[str, type[StreamEvent]] = {}
    pending = list(StreamEvent.__subclasses__())
    while pending:
        cls = pending.pop()
        module = sys.modules.get(cls.__module__)
        found[cls.__name__] = getattr(module, cls.__qualname__, cls)
        pending.extend(cls.__subclasses__())
    return found


def encode_event(event: StreamEvent) -> str:
    """An event as JSON: its class and its fields (new fields travel too)."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return json.dumps({"t": type(event).__name__, **fields}, ensure_ascii=False, separators=(",", ":"))


def decode_event(data: str | bytes, types: dict[str, type[StreamEvent]] | None = None) -> StreamEvent:
    record = json.loads(data)
    cls = (types or _event_types())[record.pop("t")]
    return cls(**record)


def run_lost() -> Error:
    return Error("run_lost", "The instance running this stream stopped before it finished.")


class RedisStore:
    """Runs in this process, mirrored to Redis; runs of other instances
    read from Redis."""

    def __init__(self, url: str, *, lease_s: float = 10.0) -> None:
        self.url = url
        self.lease_s = lease_s
        self.instance = secrets.token_hex(8)
        self.runs = MemoryRunStore()  # runs started here (and their retention)
        self.mirrors: dict[str, Run] = {}  # runs of other instances read here
        self._redis: Any = None
        self._since = 0.0
        self._types = _event_types()

    # ------------------------------------------------------------------ connection

    def client(self) -> Any:
        """The connection pool. With Entra ID it is replaced every
        ``ENTRA_RECYCLE_S`` so no connection outlives its token (new
        connections authenticate with a fresh one)."""
        entra = bool(entra_id_options(self.url))
        if self._redis is not None and entra and time.monotonic() - self._since > ENTRA_RECYCLE_S:
            old, self._redis = self._redis, None
            asyncio.get_running_loop().call_later(ENTRA_RECYCLE_S, lambda: asyncio.ensure_future(old.aclose()))
        if self._redis is None:
            self._since = time.monotonic()
            self._redis = aioredis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=SOCKET_TIMEOUT_S,
                health_check_interval=30,
                **entra_id_options(self.url),
            )
        return self._redis

    # ------------------------------------------------------------------ the RunStore interface

    async def start_run(self, *, run_id: str, window_s: float, producer: Producer) -> Run:
        run = self.runs.create(run_id=run_id, window_s=window_s, producer=producer)
        redis = self.client()
        meta, lease = _key(run.token, "meta"), _key(run.token, "lease")
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(meta, mapping={"run_id": run_id, "instance": self.instance})
                pipe.expire(meta, RUN_TTL_S)
                pipe.set(lease, self.instance, px=int(self.lease_s * 1000))
                await pipe.execute()
        except Exception as exc:
            self.runs.runs.pop(run.token, None)
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        publisher = _Publisher(self, run)
        run.count_remote_readers = publisher.count_readers
        run.stored(0)
        run.on_append(publisher.poke)
        run.add_cleanup(publisher.poke_end)
        publisher.task = asyncio.get_running_loop().create_task(publisher.main(), name=f"publish {run_id}")
        run.start_unread()
        return run

    async def open_run(self, token: str, after: int = 0) -> Run | None:
        """The run ``token``: local, or a mirror of it from Redis. Clients of
        the running instance see an event only once Redis has it, so any id
        a client holds is in Redis."""
        local = self.runs.get(token)
        if local is not None:
            return local
        mirror = self.mirrors.get(token)
        if mirror is not None and not mirror.ended and not (mirror.task and mirror.task.cancelling()):
            return mirror  # not one whose last reader just left: it is ending, with ``cancelled``
        redis = self.client()
        try:
            meta = await redis.hgetall(_key(token, "meta"))
            if not meta:
                return None
            entries = await redis.xrange(_key(token, "events"))
            alive = await redis.exists(_key(token, "lease"))
        except Exception as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
        mirror = Run(run_id=meta.get("run_id", ""), token=token, window_s=0)
        for _, fields in entries:
            mirror.append(decode_event(fields["e"], self._types))
        if not mirror.ended and not alive:
            mirror.append(run_lost())
        if not mirror.ended:
            tailer = _Tailer(self, mirror)
            try:  # present at once: the running instance may be deciding whether to cancel right now
                await tailer.announce()
            except Exception as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None
            mirror.producer = tailer.main
            self.mirrors[token] = mirror
            mirror.add_cleanup(lambda: self.mirrors.pop(token, None) if self.mirrors.get(token) is mirror else None)
        return mirror


class _Publisher:
    """Mirrors one local run into Redis and holds its lease."""

    def __init__(self, store: RedisStore, run: Run) -> None:
        self.store = store
        self.run = run
        self.published = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.failed = False

    async def count_readers(self) -> int:
        """Readers of this run on other instances, now."""
        readers = _key(self.run.token, "readers")
        redis = self.store.client()
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(readers, "-inf", time.time())
            pipe.zcard(readers)
            _, count = await pipe.execute()
        return int(count)

    def poke(self, run: Run) -> None:
        self.wake.set()

    def poke_end(self) -> None:
        self.wake.set()

    async def main(self) -> None:
        run, redis, token = self.run, self.store.client(), self.run.token
        events, meta, lease, readers = (_key(token, p) for p in ("events", "meta", "lease", "readers"))
        refresh = self.store.lease_s / 3
        next_lease = time.monotonic() + refresh
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):  # not the builtin one before 3.11
                    await asyncio.wait_for(self.wake.wait(), timeout=max(0.0, next_lease - time.monotonic()))
                self.wake.clear()
                ended = run.ended
                count_at = None
                async with redis.pipeline(transaction=False) as pipe:
                    start = max(self.published, run.base)  # a trimmed local log: what is gone stays unpublished
                    for seq, event in enumerate(run.events[start - run.base :], start + 1):
                        pipe.xadd(events, {"e": encode_event(event)}, id=f"0-{seq}")
                    self.published = run.last_seq
                    if ended:
                        if run.terminal_seq is not None:
                            pipe.hset(meta, "terminal", run.terminal_seq)
                        pipe.delete(lease, readers)
                        for key in (events, meta):
                            pipe.expire(key, max(1, int(self.store.runs.retention_s)))
                    elif time.monotonic() >= next_lease:
                        pipe.set(lease, self.store.instance, px=int(self.store.lease_s * 1000))
                        pipe.zremrangebyscore(readers, "-inf", time.time())
                        count_at = len(pipe.command_stack)
                        pipe.zcard(readers)
                        pipe.expire(events, RUN_TTL_S)
                        pipe.expire(meta, RUN_TTL_S)
                        next_lease = time.monotonic() + refresh
                    published = self.published
                    results = await pipe.execute() if pipe.command_stack else []
                run.stored(published)
                if count_at is not None:
                    run.remote_readers = int(results[count_at])
                if ended:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = True
            run.remote_readers = 0
            run.stored(None)  # local readers go on without the store
            logger.error(
                "run %s: the stream store failed (%s: %s); the run goes on here, but cannot be resumed elsewhere",
                run.run_id,
                type(exc).__name__,
                exc,
            )


class _Tailer:
    """Feeds a mirror run from Redis: ``XREAD BLOCK`` after the last event
    it has, and says it is reading (the running instance counts it)."""

    def __init__(self, store: RedisStore, run: Run) -> None:
        self.store = store
        self.mirror = run
        self.reader_id = f"{store.instance}:{secrets.token_hex(4)}"

    @property
    def presence_s(self) -> float:
        return max(3 * self.store.lease_s, 2 * BLOCK_MS / 1000)

    async def announce(self) -> None:
        readers = _key(self.mirror.token, "readers")
        async with self.store.client().pipeline(transaction=False) as pipe:
            pipe.zadd(readers, {self.reader_id: time.time() + self.presence_s})
            pipe.expire(readers, RUN_TTL_S)
            await pipe.execute()

    async def main(self, emit: Any) -> None:
        mirror, redis, types = self.mirror, self.store.client(), self.store._types
        token = mirror.token
        events, lease, readers = _key(token, "events"), _key(token, "lease"), _key(token, "readers")
        presence_s = self.presence_s
        try:
            while not mirror.ended:
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(readers, {self.reader_id: time.time() + presence_s})
                    pipe.expire(readers, RUN_TTL_S)
                    pipe.exists(lease)
                    _, _, alive = await pipe.execute()
                answer = await redis.xread({events: f"0-{mirror.last_seq}"}, block=BLOCK_MS, count=1000)
                for _, entries in answer or ():
                    for _, fields in entries:
                        emit(decode_event(fields["e"], types))
                if not answer and not mirror.ended and not alive:
                    # Nothing new and nobody runs it: the last XREAD may have raced the end; look once more.
                    rest = await redis.xrange(events, min=f"0-{mirror.last_seq + 1}")
                    for _, fields in rest:
                        emit(decode_event(fields["e"], types))
                    if not mirror.ended:
                        logger.warning("run %s: its instance stopped (lease lapsed); the stream is lost", mirror.run_id)
                        emit(run_lost())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("run %s: lost the stream store while reading (%s: %s)", mirror.run_id, type(exc).__name__, exc)
            emit(run_lost())
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(redis.zrem(readers, self.reader_id)), 1.0)


def entra_id_options(url: str) -> dict[str, Any]:
    """Options for Microsoft Entra ID auth: a ``rediss://`` URL with no
    password means "use the app's identity" (Azure Managed Redis / Azure
    Cache for Redis). ``redis`` calls the credential provider for every new
    connection; tokens come from ``azure.identity`` (cached and refreshed
    by it)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "rediss" or parts.password:
        return {}
    return {"credential_provider": EntraIdCredentials(username=parts.username or None)}


class EntraIdCredentials(CredentialProvider):
    """A ``redis`` credential provider backed by ``DefaultAzureCredential``
    (the managed identity in Azure; ``AZURE_CLIENT_ID`` picks a
    user-assigned one). The user name is the identity's object id, read
    from the token unless given in the URL."""

    SCOPE = "https://redis.azure.com/.default"

    def __init__(self, username: str | None = None) -> None:
        self.username = username
        self._credential: Any = None

    def get_credentials(self) -> tuple[str, str]:  # the sync client is not used
        raise NotImplementedError("Entra ID auth needs the asyncio client")

    async def get_credentials_async(self) -> tuple[str, str]:
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        token = (await self._credential.get_token(self.SCOPE)).token
        return self.username or _object_id(token), token


def _object_id(jwt: str) -> str:
    import base64

    payload = jwt.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims.get("oid", ""))
