"""The streaming HTTP response: heartbeats, slow readers, disconnects.

:class:`EventStreamResponse` is the Functions HTTP-streaming extension's
``StreamingResponse`` (FastAPI's) with its sending loop replaced:

* it listens for ``http.disconnect`` itself, beside the body, and cancels
  the run the moment the client goes away. Starlette stops listening under
  servers that report ASGI spec 2.4, and uvicorn drops writes to a closed
  socket silently, so relying on either would leave a paid-for model call
  running to its end;
* it sends a keep-alive (``: ping`` for SSE) whenever nothing else was
  sent for ``heartbeat_s``, so proxies and load balancers keep the line;
* it gives each write ``send_timeout_s``: a reader that stops reading
  cannot hold a run forever. Heartbeats and this timeout are checked by a
  watcher task on a coarse tick (a quarter of the shorter interval), not
  with a timer around every event;
* it coalesces events that are ready together into one write.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from azurefunctions.extensions.http.fastapi import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from streaming.encoders import Encoder, SSEEncoder
from streaming.events import StreamEvent

logger = logging.getLogger(__name__)

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "X-Content-Type-Options": "nosniff",
}
BUFFERED_EVENTS = 64
CLOSE_TIMEOUT_S = 2.0


class EventStreamResponse(StreamingResponse):
    """Streams ``events`` in ``encoder``'s format with the guarantees above."""

    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        *,
        encoder: Encoder | None = None,
        heartbeat_s: float = 15.0,
        send_timeout_s: float = 30.0,
        run_id: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.encoder = encoder or SSEEncoder()
        super().__init__(
            content=events,
            media_type=self.encoder.media_type,
            headers={**STREAM_HEADERS, **(headers or {})},
        )
        self.events = events
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self.run_id = run_id
        self.disconnected = False
        self._sending_since: float | None = None  # when the write in progress began
        self._last_write = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks_in, chunks_out = anyio.create_memory_object_stream[bytes | None](BUFFERED_EVENTS)
        self._last_write = time.monotonic()
        with chunks_out:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen_for_disconnect, receive, tg.cancel_scope)
                tg.start_soon(self._watch, chunks_in.clone(), tg.cancel_scope)
                tg.start_soon(self._produce, chunks_in)
                try:
                    await self._send(send, chunks_out)
                except TimeoutError:
                    logger.warning("run %s: the client did not take the response; ending it", self.run_id)
                except OSError:  # servers on ASGI spec 2.4 may raise on a write to a closed socket
                    logger.info("run %s: the connection closed while sending; cancelling the run", self.run_id)
                tg.cancel_scope.cancel()

    async def _listen_for_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                logger.info("run %s: the client disconnected; cancelling the run", self.run_id)
                scope.cancel()
                return

    async def _watch(self, chunks: MemoryObjectSendStream[bytes | None], scope: anyio.CancelScope) -> None:
        """Keep-alives and the slow-reader cut, checked on a coarse tick
        rather than with timers around every event (which cost more than
        the rest of the send loop together)."""
        period = max(0.01, min(self.heartbeat_s, self.send_timeout_s) / 4)
        with chunks:
            while True:
                await anyio.sleep(period)
                now = time.monotonic()
                if self._sending_since is not None:
                    if now - self._sending_since >= self.send_timeout_s:
                        logger.warning("run %s: the client stopped reading; ending the stream", self.run_id)
                        scope.cancel()
                        return
                elif self.encoder.heartbeat is not None and now - self._last_write >= self.heartbeat_s:
                    with contextlib.suppress(anyio.WouldBlock):
                        chunks.send_nowait(self.encoder.heartbeat)

    async def _produce(self, chunks: MemoryObjectSendStream[bytes | None]) -> None:
        try:
            async with chunks:
                event_id = 0
                async for event in self.events:
                    event_id += 1
                    data = self.encoder.encode(event_id, event)
                    if data:
                        await chunks.send(data)
                await chunks.send(None)  # the end (the watcher holds the stream open)
        finally:
            # Cancelled while waiting to hand over a chunk, the event
            # generator sits at a yield: close it now (its finally closes the
            # model call) rather than whenever it is garbage collected.
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    await aclose()

    async def _send(self, send: Send, chunks: MemoryObjectReceiveStream[bytes | None]) -> None:
        # ``chunks`` is closed by the caller, after the producer is cancelled.
        with anyio.fail_after(self.send_timeout_s):
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        finished = False
        while not finished:
            first = await chunks.receive()
            if first is None:
                break
            batch = [first]
            while True:  # take whatever else is ready: one write, not many
                try:
                    more = chunks.receive_nowait()
                except anyio.WouldBlock:
                    break
                if more is None:
                    finished = True
                    break
                batch.append(more)
            await self._write(send, {"type": "http.response.body", "body": b"".join(batch), "more_body": True})
        await self._write(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, send: Send, message: Message) -> None:
        self._sending_since = time.monotonic()  # the watcher ends a write that takes too long
        await send(message)
        self._last_write = time.monotonic()
        self._sending_since = None
