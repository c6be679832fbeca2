"""The streaming HTTP response: a reader of a run log.

:class:`EventStreamResponse` is the Functions HTTP-streaming extension's
``StreamingResponse`` (FastAPI's) with its sending loop replaced. It reads
a :class:`~streaming.runlog.Run` from a position (0, or the event a client
resumes after), encodes with its own encoder from the start of what the
log holds (so stateful encoders write the same bytes on a resume) and
sends only what lies after that position:

* everything pending goes out in one write, and after a wake it waits while
  the run keeps appending on consecutive turns of the loop (at most
  ``HOLD_S``), so a model faster than the socket shares writes while a
  paced one is written at once; ``coalesce_s`` (``COALESCE_MS``) replaces
  that wait with a fixed window;
* it listens for ``http.disconnect`` itself, beside the body, and stops
  reading the moment the client goes away. Starlette stops listening under
  servers that report ASGI spec 2.4, and uvicorn drops writes to a closed
  socket silently, so relying on either would leave a paid-for model call
  running to its end. A reader leaving is the run's business
  (:meth:`Run.detach`): cancelled at once, or after the resume window;
* a watcher on a coarse tick (a quarter of the shorter interval, not a
  timer per event) sends a keep-alive (``: ping`` for SSE) when nothing
  else was sent for ``heartbeat_s``, and ends a write that takes longer
  than ``send_timeout_s``: a reader that stops reading cannot hold a run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping

from azurefunctions.extensions.http.fastapi import StreamingResponse
from starlette.types import Receive, Scope, Send

from streaming.encoders import Encoder, SSEEncoder
from streaming.events import StreamEvent
from streaming.runlog import CLOSE_TIMEOUT_S, Emit, Run
from streaming.shield import finish

logger = logging.getLogger(__name__)

HOLD_S = 0.002  # the longest a write waits for events still being appended turn after turn
# Turns of the loop with nothing new that end the wait: one while the run's events come one
# per write (a paced model), a few once they come in bursts (a workflow hands its agents'
# tokens on in bursts a few turns apart).
QUIET_TURNS_PACED = 1
QUIET_TURNS_BURSTS = 3

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "X-Content-Type-Options": "nosniff",
}


def run_of(events: AsyncIterator[StreamEvent], run_id: str) -> Run:
    """A run that just relays ``events`` (no deadline, no error mapping),
    cancelled as soon as its reader leaves."""

    async def relay(emit: Emit) -> None:
        try:
            async for event in events:
                emit(event)
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await finish(aclose(), CLOSE_TIMEOUT_S)

    run = Run(run_id=run_id)
    run.producer = relay
    return run


async def _while_appending(run: Run, loop: asyncio.AbstractEventLoop, quiet_turns: int) -> None:
    """Give the loop back while the run keeps appending (a model writing
    faster than we can send), for at most ``HOLD_S``: those events then share
    one write instead of a send and a task switch each. ``quiet_turns`` turns
    of the loop with nothing new end it, so a paced model's token waits one
    turn, not a timer."""
    seen, deadline, quiet = run.readable_seq, loop.time() + HOLD_S, 0
    while True:
        await asyncio.sleep(0)
        if run.readable_seq == seen:
            quiet += 1
            if quiet >= quiet_turns:
                return
        else:
            seen, quiet = run.readable_seq, 0
        if run.ended or loop.time() >= deadline:
            return


class EventStreamResponse(StreamingResponse):
    """Streams a run (or, for convenience, any async iterator of events)
    in ``encoder``'s format, from event ``after + 1`` on."""

    def __init__(
        self,
        source: Run | AsyncIterator[StreamEvent],
        *,
        after: int = 0,
        encoder: Encoder | None = None,
        heartbeat_s: float = 15.0,
        send_timeout_s: float = 30.0,
        coalesce_s: float = 0.0,
        run_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.encoder = encoder or SSEEncoder()
        super().__init__(content=(), media_type=self.encoder.media_type, headers={**STREAM_HEADERS, **(headers or {})})
        self.run = source if isinstance(source, Run) else run_of(source, run_id)
        self.after = after
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self.coalesce_s = coalesce_s
        self.run_id = run_id or self.run.run_id
        self.position = after  # the last event sent (or skipped); the run reads it when trimming
        self.disconnected = False
        self.complete = False  # the last event is written: a disconnect now is no news
        self._sending_since: float | None = None  # when the write in progress began
        self._last_write = 0.0
        self._waiting: asyncio.Future[None] | None = None  # set while idle, for the watcher to wake
        self._heartbeat_due = False
        self._stopped = False  # a helper ended the stream (disconnect, slow reader)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = self.run
        run.attach(self)
        run.start()
        self._last_write = time.monotonic()
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        # Two helpers beside the body; either stops the stream by cancelling
        # this task (a task group's cancel scopes cost more than the rest of
        # the response's per-run work). Only that cancellation is absorbed
        # here: one from outside (the server stopping) goes on.
        helpers = (
            loop.create_task(self._listen_for_disconnect(receive, task)),
            loop.create_task(self._watch(task)),
        )
        for helper in helpers:
            helper.add_done_callback(functools.partial(self._helper_ended, task))
        try:
            await self._stream(send)
        except TimeoutError:
            logger.warning("run %s: the client did not take the response; ending it", self.run_id)
        except OSError:  # servers on ASGI spec 2.4 may raise on a write to a closed socket
            logger.info("run %s: the connection closed while sending", self.run_id)
        except asyncio.CancelledError:
            if not self._stopped or task.uncancel() > 0:
                raise
        finally:
            self._stopped = True  # a helper's news arriving now (a late failure) must not cancel the detach
            for helper in helpers:
                helper.cancel()
            detaching = run.detach(self)
            if run.ended:
                await detaching  # an ended run has nothing to wait for: it returns at once
            else:  # the run may be cancelled now: wait for it even if this task is cancelled meanwhile
                await finish(detaching, 2 * CLOSE_TIMEOUT_S)

    def _helper_ended(self, task: asyncio.Task[None], helper: asyncio.Task[None]) -> None:
        """A helper that fails (the server's ``receive`` raising, a bug)
        ends the stream, logged: without it, nothing would notice the client
        leave or stop reading."""
        if helper.cancelled() or helper.exception() is None:
            return
        logger.error(
            "run %s: the response's %s failed; ending the stream",
            self.run_id,
            helper.get_coro().__name__,  # type: ignore[union-attr]
            exc_info=helper.exception(),
        )
        self._stop(task)

    def _stop(self, task: asyncio.Task[None]) -> None:
        """End the stream (a helper's call): cancel the task writing it, once."""
        if not self._stopped:
            self._stopped = True
            task.cancel()

    async def _listen_for_disconnect(self, receive: Receive, task: asyncio.Task[None]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if not self.complete:  # uvicorn also says so once a response is complete
                    logger.info("run %s: the client disconnected", self.run_id)
                self._stop(task)
                return

    async def _watch(self, task: asyncio.Task[None]) -> None:
        """Keep-alives and the slow-reader cut, checked on a coarse tick
        rather than with timers around every event."""
        period = max(0.01, min(self.heartbeat_s, self.send_timeout_s) / 4)
        heartbeat = self.encoder.heartbeat
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if self._sending_since is not None:
                if now - self._sending_since >= self.send_timeout_s:
                    logger.warning("run %s: the client stopped reading; ending the stream", self.run_id)
                    self._stop(task)
                    return
            elif heartbeat is not None and now - self._last_write >= self.heartbeat_s:
                waiting = self._waiting
                if waiting is not None and not waiting.done():
                    self._heartbeat_due = True
                    waiting.set_result(None)

    async def _stream(self, send: Send) -> None:
        run, encoder, token, after = self.run, self.encoder, self.run.token, self.after
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.send_timeout_s):
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        seq = run.base  # encode from the oldest event kept: stateful encoders need what came before `after`
        quiet_turns = QUIET_TURNS_PACED
        while True:
            if seq < run.base:  # a run over its byte cap dropped events this reader had skipped anyway
                seq = run.base
            start = seq - run.base
            if seq < run.readable_seq:
                if not run.ended:
                    if self.coalesce_s > 0:
                        await asyncio.sleep(self.coalesce_s)  # let tokens arriving right behind share this write
                    else:
                        await _while_appending(run, loop, quiet_turns)
                    if seq < run.base:
                        seq = run.base
                    start = seq - run.base
                pending = run.events[start : run.readable_seq - run.base]
                chunks = []
                for event in pending:
                    seq += 1
                    data = encoder.encode(f"{token}:{seq}", event)
                    if data and seq > after:
                        chunks.append(data)
                self.position = seq
                if run.ended and seq >= run.last_seq:
                    self.complete = True
                    # The last events end the body in the same write: one send fewer per run.
                    await self._write(send, b"".join(chunks), more_body=False)
                    return
                if chunks:
                    await self._write(send, b"".join(chunks) if len(chunks) > 1 else chunks[0])
                quiet_turns = QUIET_TURNS_BURSTS if len(pending) > 1 else QUIET_TURNS_PACED
                continue
            if run.ended and seq >= run.last_seq:
                self.complete = True
                break
            if self._heartbeat_due:
                self._heartbeat_due = False
                await self._write(send, encoder.heartbeat or b"")
                continue
            waiter = loop.create_future()
            run.subscribe(waiter)
            self._waiting = waiter
            try:
                await waiter
            finally:
                self._waiting = None
        await self._write(send, b"", more_body=False)

    async def _write(self, send: Send, body: bytes, *, more_body: bool = True) -> None:
        self._sending_since = time.monotonic()  # the watcher ends a write that takes too long
        await send({"type": "http.response.body", "body": body, "more_body": more_body})
        self._last_write = time.monotonic()
        self._sending_since = None
