"""The run log: a run's events in order, written by the run, read by responses.

A run is its own task (:meth:`Run.start`): it appends each event to its
:class:`Run` and wakes whoever waits. Responses are readers: each keeps its
own position, takes everything pending in one slice and writes it in one
send. Nothing per event but a list append (and, when a reader is idle, one
future resolved): no channel, no task switch forced per event.

Because the run is not the response's task, it can outlive its connection:
when the last reader leaves, the run keeps going for ``window_s`` in case a
client resumes (see ``streaming.http``), then is cancelled, which closes its
model call. ``window_s = 0`` cancels at once.

Ids: event ``n`` (from 1) of run ``token`` is ``"<token>:<n>"``. The token is
128 random bits: holding it is what lets a client read the run.

:class:`MemoryRunStore` keeps runs in this process: finished runs for
``retention_s``, at most ``max_runs`` of them, each at most
``max_run_bytes`` (a longer run drops its oldest events, once every reader
is past them); the oldest go first and every eviction is logged. The Redis
backend (``streaming.redislog``) shares runs between instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from streaming.events import Error, StreamEvent, TextDelta

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0
EVICTION_LOG_INTERVAL_S = 60.0
ORPHAN_GRACE_S = 10.0  # a run nobody ever reads is cancelled after this (or its window, if longer)
EVENT_OVERHEAD_BYTES = 120  # an event object and its list slot, roughly

Emit = Callable[[StreamEvent], None]
Producer = Callable[[Emit], Awaitable[None]]


def new_token() -> str:
    """128 random bits, URL-safe: unguessable, so it can stand for the run."""
    return secrets.token_urlsafe(16)


def parse_event_id(value: str) -> tuple[str, int] | None:
    """``"<token>:<seq>"`` -> (token, seq), or ``None`` when it is not one of ours."""
    token, sep, seq = value.strip().rpartition(":")
    if not sep or not token or len(token) > 64 or not seq.isdigit() or len(seq) > 9:
        return None
    return token, int(seq)


def approx_size(event: StreamEvent) -> int:
    """What keeping ``event`` costs, roughly: exact enough for a cap, cheap
    enough for every event (text, the common case, is one ``len``)."""
    if type(event) is TextDelta:
        return EVENT_OVERHEAD_BYTES + 2 * len(event.text)
    return EVENT_OVERHEAD_BYTES + len(repr(event.payload()))


class StoreUnavailable(Exception):
    """The run store (Redis) cannot be reached: a run cannot start or resume."""


class Reader(Protocol):
    """What a run needs to know of a reader: where it is."""

    position: int


class Run:
    """One run's log. ``events[i]`` has sequence number ``base + i + 1``;
    ``base`` grows when a run over its byte cap drops its oldest events."""

    def __init__(self, *, run_id: str = "", token: str | None = None, window_s: float = 0.0) -> None:
        self.token = token or new_token()
        self.run_id = run_id
        self.window_s = window_s
        self.events: list[StreamEvent] = []
        self.base = 0
        self.ended = False  # no event will follow
        self.terminal_seq: int | None = None  # the seq of done/error, once appended
        self.producer: Producer | None = None
        self.task: asyncio.Task[None] | None = None
        self.readers: set[Reader] = set()
        self.remote_readers = 0  # readers on other instances (Redis backend)
        self.count_remote_readers: Callable[[], Awaitable[int]] | None = None  # asks the store, when shared
        self.bytes = 0
        self.max_bytes = 0  # 0: no cap
        self.created = time.monotonic()
        self.finished_at: float | None = None
        self.cut_short = False  # cancelled before its terminal event
        # With a shared store: readers see events only once stored (so any id
        # a client holds can be resumed anywhere). None: as soon as appended.
        self.stored_seq: int | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._window: asyncio.TimerHandle | None = None
        self._cancelling: asyncio.Task[None] | None = None
        self._entered = False  # the task began (a task cancelled before its first step never does)
        self._cleanups: list[Callable[[], Any]] = []
        self._on_append: list[Callable[[Run], None]] = []

    # ------------------------------------------------------------------ writing (the run's task)

    @property
    def last_seq(self) -> int:
        return self.base + len(self.events)

    @property
    def readable_seq(self) -> int:
        """The last event readers may send."""
        return self.last_seq if self.stored_seq is None else min(self.stored_seq, self.last_seq)

    def stored(self, seq: int | None) -> None:
        """The store holds events up to ``seq`` (``None``: the store is gone,
        readers go on with the log alone)."""
        self.stored_seq = seq
        self._wake()

    def append(self, event: StreamEvent) -> None:
        """Add ``event`` and wake idle readers. Synchronous: the run never
        waits for a reader."""
        if self.ended:
            return
        self.events.append(event)
        if event.terminal:
            self.terminal_seq = self.base + len(self.events)
            self.ended = True
        if self.max_bytes:
            self.bytes += approx_size(event)
            if self.bytes > self.max_bytes:
                self._trim()
        if self._on_append:
            for callback in self._on_append:
                callback(self)
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _trim(self) -> None:
        """Over the byte cap: drop the oldest events every reader has
        already sent and the shared store already holds, down to three
        quarters of the cap (so this runs rarely). A resume from before them
        then gets 204."""
        keep_from = min((r.position for r in self.readers), default=self.last_seq)
        if self.stored_seq is not None:  # the store's writer has yet to copy what follows
            keep_from = min(keep_from, self.stored_seq)
        limit = min(keep_from - self.base, len(self.events) - 1)
        target = self.max_bytes * 3 // 4
        drop = freed = 0
        while drop < limit and self.bytes - freed > target:
            freed += approx_size(self.events[drop])
            drop += 1
        if drop <= 0:
            return
        del self.events[:drop]
        self.base += drop
        self.bytes -= freed
        logger.warning(
            "run %s: over %d bytes kept for resuming; dropped its oldest %d events", self.run_id, self.max_bytes, drop
        )

    def on_append(self, callback: Callable[[Run], None]) -> None:
        """Call ``callback(run)`` after every append (the Redis backend
        mirrors the log this way; it must not block)."""
        self._on_append.append(callback)

    def add_cleanup(self, cleanup: Callable[[], Any]) -> None:
        """Run ``cleanup`` (sync, or returning an awaitable) when the run ends,
        however it ends: a place for per-run resources (a concurrency slot,
        a lease) that must not depend on a connection."""
        self._cleanups.append(cleanup)

    # ------------------------------------------------------------------ the task

    def start(self) -> None:
        """Start the run's task, once."""
        if self.task is None and self.producer is not None:
            self.task = asyncio.get_running_loop().create_task(self._main(self.producer), name=f"run {self.run_id}")
            self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never ran ``_main`` (nor its
        ``finally``): end the run and run its cleanups here."""
        if self._entered:
            return
        self.cut_short = not self.ended
        self.append(closing_error())
        self.ended = True
        self.finished_at = time.monotonic()
        self.producer = None
        if self._window is not None:
            self._window.cancel()
        self._wake()
        self._cancelling = asyncio.ensure_future(self._run_cleanups())

    def start_unread(self) -> None:
        """Start the run before any reader attached: should none ever do (the
        response was never sent), it is cancelled as if its reader had left."""
        self.start()
        if not self.readers and self._window is None:
            grace = max(self.window_s, ORPHAN_GRACE_S)
            self._window = asyncio.get_running_loop().call_later(grace, self._window_expired)

    async def _main(self, producer: Producer) -> None:
        self._entered = True
        try:
            await producer(self.append)
        except asyncio.CancelledError:
            # Cancelled (its clients left, or the process stops): a reader
            # that comes back still gets a terminal event.
            self.cut_short = not self.ended
            self.append(closing_error())
        except Exception:  # the producer maps failures to events; this is a bug
            logger.exception("run %s: the run task failed", self.run_id)
            self.append(Error("internal_error", "The run failed unexpectedly."))
        finally:
            self.ended = True
            self.finished_at = time.monotonic()
            self.producer = None  # what the run held (request, client) is not kept with its events
            if self._window is not None:
                self._window.cancel()
            self._wake()
            await self._run_cleanups()
            self._on_append.clear()

    async def _run_cleanups(self) -> None:
        cleanups, self._cleanups = self._cleanups, []
        for cleanup in reversed(cleanups):
            try:
                result = cleanup()
                if isinstance(result, Awaitable):
                    await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(result)), CLOSE_TIMEOUT_S)
            except Exception:
                logger.exception("run %s: a cleanup failed", self.run_id)

    async def cancel(self) -> None:
        """Cancel the run unless it has ended, and wait (bounded) until its
        task is over: its model call closed, its cleanups run."""
        task = self.task
        if task is None:
            self.ended = True
            self._wake()
            return
        if not self.ended:
            task.cancel()
        if not task.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ readers

    def subscribe(self, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` at the next append, store or end."""
        if self.ended and self.readable_seq >= self.last_seq:
            waiter.set_result(None)
        else:
            self._waiters.append(waiter)

    def attach(self, reader: Reader) -> None:
        self.readers.add(reader)
        if self._window is not None:
            self._window.cancel()
            self._window = None

    async def detach(self, reader: Reader) -> None:
        """``reader`` left. If it was the last one and the run is still
        going, the run gets ``window_s`` for a client to come back."""
        self.readers.discard(reader)
        if self.readers or self.ended:
            return
        if self.window_s <= 0:
            await self.cancel()
        elif self._window is None:
            loop = asyncio.get_running_loop()
            self._window = loop.call_later(self.window_s, self._window_expired)

    @property
    def present(self) -> bool:
        """A client reads this run, here or (Redis) on another instance."""
        return bool(self.readers) or self.remote_readers > 0

    def _window_expired(self) -> None:
        self._window = None
        if self.ended:
            return
        self._cancelling = asyncio.get_running_loop().create_task(self._end_of_window())  # a reference keeps it

    async def _end_of_window(self) -> None:
        """The window passed with no reader here: ask the store (readers on
        other instances) right now, not what the last lease refresh saw."""
        if self.count_remote_readers is not None:
            try:
                self.remote_readers = await self.count_remote_readers()
            except Exception:  # the store is gone: only local readers count
                self.remote_readers = 0
        if self.ended or self.readers:
            return
        if self.present:  # a reader elsewhere: look again after another window
            self._window = asyncio.get_running_loop().call_later(max(self.window_s, 1.0), self._window_expired)
            return
        logger.info("run %s: no client came back within %g s; cancelling the run", self.run_id, self.window_s)
        await self.cancel()


class MemoryRunStore:
    """Runs of this process, by token. Finished runs stay ``retention_s``;
    at most ``max_runs`` are kept (the oldest finished ones go first)."""

    def __init__(self, *, retention_s: float = 300.0, max_runs: int = 1000, max_run_bytes: int = 4 << 20) -> None:
        self.retention_s = retention_s
        self.max_runs = max_runs
        self.max_run_bytes = max_run_bytes
        self.runs: dict[str, Run] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()  # token -> when it finished
        self._evicted = 0
        self._evictions_logged = -EVICTION_LOG_INTERVAL_S

    def configure(self, *, retention_s: float, max_runs: int, max_run_bytes: int) -> None:
        self.retention_s, self.max_runs, self.max_run_bytes = retention_s, max_runs, max_run_bytes

    def create(self, *, run_id: str, window_s: float, producer: Producer) -> Run:
        self.sweep()
        run = Run(run_id=run_id, window_s=window_s)
        run.producer = producer
        run.max_bytes = self.max_run_bytes
        run.add_cleanup(lambda: self._ended(run))
        self.runs[run.token] = run
        return run

    def get(self, token: str) -> Run | None:
        self.sweep()
        return self.runs.get(token)

    def _ended(self, run: Run) -> None:
        if run.token in self.runs:
            self._finished[run.token] = time.monotonic()
        self.sweep()

    def sweep(self) -> None:
        """Drop expired finished runs, then the oldest ones over the cap.
        Costs nothing when there is nothing to drop (no timer needed)."""
        now = time.monotonic()
        while self._finished:
            token, finished = next(iter(self._finished.items()))
            if now - finished >= self.retention_s:
                self._finished.popitem(last=False)
                self.runs.pop(token, None)
            elif len(self.runs) > self.max_runs:
                self._finished.popitem(last=False)
                run = self.runs.pop(token, None)
                self._evicted += 1
                if now - self._evictions_logged >= EVICTION_LOG_INTERVAL_S:  # one line a minute under load
                    logger.warning(
                        "run %s: evicted %.0f s early (more than %d runs kept for resuming; %d evicted since the "
                        "last such line)",
                        run.run_id if run else token,
                        self.retention_s - (now - finished),
                        self.max_runs,
                        self._evicted,
                    )
                    self._evictions_logged, self._evicted = now, 0
            else:
                break


def closing_error() -> Error:
    """The terminal event of a run cancelled because its clients left."""
    return Error("cancelled", "The run was cancelled: no client was reading it.")


class RunStore(Protocol):
    """Where runs live: this process (:class:`MemoryRunStore`) or Redis."""

    async def start_run(self, *, run_id: str, window_s: float, producer: Producer) -> Run: ...

    async def open_run(self, token: str, after: int = 0) -> Run | None: ...


class MemoryStore:
    """The embedded default: :class:`MemoryRunStore` behind the async
    :class:`RunStore` interface."""

    def __init__(self) -> None:
        self.runs = MemoryRunStore()

    async def start_run(self, *, run_id: str, window_s: float, producer: Producer) -> Run:
        run = self.runs.create(run_id=run_id, window_s=window_s, producer=producer)
        run.start_unread()
        return run

    async def open_run(self, token: str, after: int = 0) -> Run | None:
        return self.runs.get(token)


_stores: dict[str, Any] = {}


def run_store(settings: Any) -> RunStore:
    """The process's store for ``settings`` (a ``settings.ResumeSettings``),
    made on first use and reconfigured on each call (settings are read per
    request)."""
    key = settings.store_url
    store = _stores.get(key)
    if store is None:
        if key:
            from streaming.redislog import RedisStore  # only deployments that use Redis import it

            store = RedisStore(key)
        else:
            store = MemoryStore()
        _stores[key] = store
    store.runs.configure(
        retention_s=settings.retention_s, max_runs=settings.max_runs, max_run_bytes=settings.max_run_bytes
    )
    if key:
        store.lease_s = settings.lease_s
    return store
