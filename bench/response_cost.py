"""``python -m bench.response_cost``: the response layer's cost per event,
against a plain ``StreamingResponse`` in the same run (about 20 s).

What is timed is everything between a runner's events and the server's
``send``: the run's deadline and error handling, the hand-off to the
response, encoding (SSE) and the writes. No agent, no HTTP parsing: the
events are a synthetic agent run (an ``agent_started``, a tool call and
result, 225 text pieces, ``agent_completed``, ``done``) replayed either

* ``burst``: all ready at once (a fast model whose chunks arrive together);
* ``paced``: one event per event-loop turn (each chunk arrives on its own,
  the usual case with a real model).

and written through either a no-op ``send`` (the layer's own CPU) or a
``send`` doing what uvicorn's h11 protocol does per body message (h11
framing and a socket write into a socketpair a thread drains).

The reference is a plain ``StreamingResponse`` over a generator that
encodes each event with the same ``SSEEncoder`` (the naive handler: one
write per event, no deadline, no heartbeat, no disconnect handling beyond
Starlette's own). Configurations are interleaved in every round; the
figures are medians over ``--rounds`` with their min-max.

Runs against whichever response code is checked out: with the run log
(``streaming.pipeline.drive``) the app path is the one ``streaming.http``
uses; before it, ``EventStreamResponse(guard(events))``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11
from starlette.responses import StreamingResponse

from streaming import pipeline
from streaming.encoders import SSEEncoder
from streaming.events import AgentCompleted, AgentStarted, Done, StreamEvent, TextDelta, ToolCall, ToolResult
from streaming.response import EventStreamResponse

SCOPE = {"type": "http", "asgi": {"spec_version": "2.3"}, "method": "POST", "path": "/", "headers": []}
WORDS = [f" word{i}" for i in range(225)]
EVENTS: list[StreamEvent] = [
    AgentStarted("weather"),
    ToolCall("weather", "call_1", "get_weather", {"location": "Oslo"}),
    ToolResult("weather", "call_1", "get_weather", {"location": "Oslo", "conditions": "windy", "temperature_c": 5}),
    *(TextDelta(w, "weather") for w in WORDS),
    AgentCompleted("weather"),
    Done("offline", "offline-demo", {"input_tokens": 10, "output_tokens": 225, "total_tokens": 235}),
]


async def events(paced: bool) -> AsyncIterator[StreamEvent]:
    for event in EVENTS:
        if paced:
            await asyncio.sleep(0)
        yield event


async def never() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class NoopSend:
    def __init__(self) -> None:
        self.writes = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.writes += 1


class Drain:
    """A socketpair whose far end a thread reads and discards."""

    def __init__(self) -> None:
        self.near, self.far = socket.socketpair()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.far.recv(1 << 20):
            pass

    def close(self) -> None:
        self.near.close()
        self._thread.join(5)
        self.far.close()


class H11Send(NoopSend):
    """uvicorn's h11 protocol per ASGI message: framing, then a socket write."""

    REQUEST = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, drain: Drain) -> None:
        super().__init__()
        self.sock = drain.near
        self.conn = h11.Connection(h11.SERVER)
        self.conn.receive_data(self.REQUEST)
        self.conn.next_event()
        self.conn.next_event()

    async def __call__(self, message: dict[str, Any]) -> None:
        await super().__call__(message)
        if message["type"] == "http.response.start":
            self.sock.sendall(self.conn.send(h11.Response(status_code=message["status"], headers=message["headers"])))
            return
        self.sock.sendall(self.conn.send(h11.Data(data=message.get("body", b""))))
        if not message.get("more_body", False):
            self.sock.sendall(self.conn.send(h11.EndOfMessage()))


def plain(paced: bool) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        encoder = SSEEncoder()
        n = 0
        async for event in events(paced):
            n += 1
            yield encoder.encode(n, event)

    return StreamingResponse(body(), media_type="text/event-stream")


def app(paced: bool, coalesce_ms: float) -> EventStreamResponse:
    if hasattr(pipeline, "drive"):  # the run log
        from streaming.runlog import Run

        run = Run(run_id="bench", window_s=0)
        run.producer = lambda emit: pipeline.drive(events(paced), emit, deadline_s=600, run_id="bench")
        return EventStreamResponse(run, encoder=SSEEncoder(), coalesce_s=coalesce_ms / 1000, run_id="bench")
    return EventStreamResponse(guard_events(paced), encoder=SSEEncoder(), run_id="bench")


def guard_events(paced: bool) -> AsyncIterator[StreamEvent]:
    return pipeline.guard(events(paced), deadline_s=600, run_id="bench")


async def timed(make: Callable[[], Any], send_factory: Callable[[], NoopSend], seconds: float) -> tuple[float, float]:
    """(µs per event, writes per event) over at least ``seconds``."""
    gc.collect()
    runs = writes = 0
    start = time.perf_counter()
    while True:
        send = send_factory()
        await make()(SCOPE, never, send)
        runs += 1
        writes += send.writes
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            n = runs * len(EVENTS)
            return 1e6 * elapsed / n, writes / n


async def latency(coalesce_ms: float, gap_s: float) -> dict[str, float]:
    """One run whose events are ``gap_s`` apart (``asyncio.sleep``): how
    long each event waits between the run emitting it and its bytes going to
    ``send`` (the first one's wait is what COALESCE_MS adds to time to first
    byte), and writes per event."""
    produced: list[float] = []
    sent: list[float] = []

    async def paced() -> AsyncIterator[StreamEvent]:
        for event in EVENTS:
            await asyncio.sleep(gap_s)
            produced.append(time.perf_counter())
            yield event

    async def send(message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if body:
            sent.extend([time.perf_counter()] * body.count(b"\n\n"))

    run_factory = getattr(pipeline, "drive", None)
    if run_factory is None:
        response = EventStreamResponse(pipeline.guard(paced(), deadline_s=600, run_id="b"), encoder=SSEEncoder())
    else:
        from streaming.runlog import Run

        run = Run(run_id="bench", window_s=0)
        run.producer = lambda emit: pipeline.drive(paced(), emit, deadline_s=600, run_id="bench")
        response = EventStreamResponse(run, encoder=SSEEncoder(), coalesce_s=coalesce_ms / 1000)
    writes = NoopSend()

    async def counting_send(message: dict[str, Any]) -> None:
        await writes(message)
        await send(message)

    await response(SCOPE, never, counting_send)
    waits = sorted(1e3 * (s - p) for p, s in zip(produced, sent, strict=True))
    return {
        "first_ms": round(1e3 * (sent[0] - produced[0]), 3),
        "p50_ms": round(waits[len(waits) // 2], 3),
        "p99_ms": round(waits[int(len(waits) * 0.99)], 3),
        "writes_per_event": round(writes.writes / len(EVENTS), 3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    drain = Drain()
    senders: dict[str, Callable[[], NoopSend]] = {"noop": NoopSend, "h11+socket": lambda: H11Send(drain)}
    configs: dict[str, tuple[Callable[[], Any], Callable[[], NoopSend]]] = {}
    for sender, factory in senders.items():
        for paced in (False, True):
            shape = "paced" if paced else "burst"
            configs[f"plain StreamingResponse | {shape} | {sender}"] = (lambda p=paced: plain(p), factory)
            for coalesce in args.coalesce_ms:
                label = "app" if not hasattr(pipeline, "drive") else f"app COALESCE_MS={coalesce:g}"
                configs[f"{label} | {shape} | {sender}"] = (lambda p=paced, c=coalesce: app(p, c), factory)
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    try:
        for make, factory in configs.values():  # warm-up
            await timed(make, factory, 0.05)
        for _ in range(args.rounds):
            for name, (make, factory) in configs.items():
                rows[name].append(await timed(make, factory, args.seconds))
    finally:
        drain.close()
    out = {}
    for name, samples in rows.items():
        us = [u for u, _ in samples]
        out[name] = {
            "us_per_event": round(statistics.median(us), 2),
            "min": round(min(us), 2),
            "max": round(max(us), 2),
            "writes_per_event": round(statistics.median(w for _, w in samples), 3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.response_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--coalesce-ms", type=float, nargs="*", default=[0.0])
    parser.add_argument("--latency", action="store_true", help="also: added wait per event at 0.2 ms and 5 ms gaps")
    args = parser.parse_args(argv)
    if args.latency:
        print(f"{'gap':>8}{'COALESCE_MS':>13}{'first ms':>10}{'p50 ms':>9}{'p99 ms':>9}{'writes/event':>14}")
        for gap in (0.0002, 0.005):
            for coalesce in args.coalesce_ms:
                rows = [asyncio.run(latency(coalesce, gap)) for _ in range(args.rounds)]
                med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                print(
                    f"{gap * 1000:>6g}ms{coalesce:>13g}{med['first_ms']:>10.3f}{med['p50_ms']:>9.3f}"
                    f"{med['p99_ms']:>9.3f}{med['writes_per_event']:>14.3f}"
                )
    result = asyncio.run(main_async(args))
    width = max(len(k) for k in result) + 2
    print(f"{'':<{width}}{'µs/event':>10}{'min-max':>16}{'writes/event':>14}{'× plain':>9}")
    for name, row in result.items():
        shape_sender = name.split(" | ", 1)[1]
        base = result[f"plain StreamingResponse | {shape_sender}"]["us_per_event"]
        span = f"{row['min']:.1f}-{row['max']:.1f}"
        ratio = row["us_per_event"] / base
        print(f"{name:<{width}}{row['us_per_event']:>10.2f}{span:>16}{row['writes_per_event']:>14.3f}{ratio:>9.2f}")
    print(f"(medians of {args.rounds} interleaved rounds, pid {os.getpid()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
