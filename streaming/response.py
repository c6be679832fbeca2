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
  cannot hold a run forever;
* it coalesces events that are ready together into one write.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from azurefunctions.extensions.http.fastapi import StreamingResponse
from starlette.types import Receive, Scope, Send

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks_in, chunks_out = anyio.create_memory_object_stream[bytes](BUFFERED_EVENTS)
        with chunks_out:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen_for_disconnect, receive, tg.cancel_scope)
                tg.start_soon(self._produce, chunks_in)
                try:
                    await self._send(send, chunks_out)
                except TimeoutError:
                    logger.warning("run %s: the client stopped reading; ending the stream", self.run_id)
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

    async def _produce(self, chunks: MemoryObjectSendStream[bytes]) -> None:
        try:
            async with chunks:
                event_id = 0
                async for event in self.events:
                    event_id += 1
                    data = self.encoder.encode(event_id, event)
                    if data:
                        await chunks.send(data)
        finally:
            # Cancelled while waiting to hand over a chunk, the event
            # generator sits at a yield: close it now (its finally closes the
            # model call) rather than whenever it is garbage collected.
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    await aclose()

    async def _send(self, send: Send, chunks: MemoryObjectReceiveStream[bytes]) -> None:
        # ``chunks`` is closed by the caller, after the producer is cancelled.
        with anyio.fail_after(self.send_timeout_s):
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        while True:
            with anyio.move_on_after(self.heartbeat_s) as idle:
                try:
                    data = [await chunks.receive()]
                except anyio.EndOfStream:
                    break
            if idle.cancelled_caught:
                if self.encoder.heartbeat is None:
                    continue
                data = [self.encoder.heartbeat]
            else:
                while True:  # take whatever else is ready: one write, not many
                    try:
                        data.append(chunks.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
            with anyio.fail_after(self.send_timeout_s):
                await send({"type": "http.response.body", "body": b"".join(data), "more_body": True})
        with anyio.fail_after(self.send_timeout_s):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
