"""``python -m bench.overhead [--seconds 0.3]``: the app's own cost per streamed
event, in-process, no HTTP (about 25 s).

Three parts:

1. In context: ``streaming.runners.run_agent`` / ``run_workflow`` over
   ``llm.offline.OfflineChatClient(delay=0)``, iterated bare, then through
   ``streaming.pipeline.guard``, then also encoded with ``SSEEncoder``, then
   also sent through ``EventStreamResponse`` with a no-op ASGI ``send``.
   Most of this is the Agent Framework's own work; the steps between the
   rows are the app's layers (differences this small are within noise, so
   part 2 measures them alone).
   1b. The same runners over the app's real OpenAI client
   (``llm.create_chat_client``) against ``bench.fake_model`` in its own
   process, 8 runs at a time: what the SDK's HTTP and chunk parsing add per
   event, in this process's CPU time. No pacing by default;
   ``--openai-chunk-delay 0.05`` paces chunks as ``bench.load`` does (each
   chunk then arrives on its own, which costs more per event; ~1 min).
2. The app's layers alone, on events recorded from real runs:
   ``UpdateMapper.feed`` (per framework update and per event it yields),
   ``guard``, ``SSEEncoder.encode``.
3. The ``EventStreamResponse`` send loop alone over recorded events, with
   the app's coalescing loop and with one write per event (a subclass in
   this file with the coalescing ``while`` removed; the app is not
   modified), each with (a) a no-op ``send`` and (b) a ``send`` doing what
   uvicorn's h11 protocol does per body message (h11 chunk framing plus a
   ``socket.send`` into a socketpair drained by a thread), for 1 stream and
   for 50 streams sharing the loop, and (c) a ``send`` that yields to the
   loop once, as uvicorn's does when a slow reader has paused the
   transport. Reports µs per event and writes per event.

Timings are the median of ``--rounds`` rounds (configurations interleaved,
so drift hits all alike), each running for at least ``--seconds``. Prints a
table and writes ``bench/results/overhead-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import h11

from agents import WEATHER_AGENT_NAME, build_weather_agent
from bench.common import FakeModelProcess, fmt, machine, write_results
from bench.fake_model import API_KEY, MODEL
from llm import create_chat_client
from llm.offline import OfflineChatClient
from settings import ModelSettings
from streaming.encoders import SSEEncoder
from streaming.events import StreamEvent
from streaming.mapping import UpdateMapper
from streaming.pipeline import guard
from streaming.request import RunRequest
from streaming.response import EventStreamResponse
from streaming.runners import run_agent, run_workflow

SETTINGS = ModelSettings(provider="offline", model="offline-demo")
AGENT_MESSAGE = "What is the weather in Seattle and Paris?"
WORKFLOW_MESSAGE = "Research the weather in Oslo and write a short brief"
SCOPE = {"type": "http", "method": "POST", "path": "/api/agent/stream", "headers": []}
DEADLINE_S = 600.0
LAYERS = ("bare", "guard", "encode", "response")
OPENAI_CONCURRENCY = 8  # part 1b: runs in flight at once

# A measurement: one call runs one "unit" and returns how many events it handled.
Unit = Callable[[], Awaitable[int]]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()  # cancelled by the response's task group at the end
    raise AssertionError("unreachable")


async def replay(events: Sequence[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


class NoopSend:
    def __init__(self) -> None:
        self.writes = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.writes += 1


class YieldingSend(NoopSend):
    """A send that gives the loop one turn, as uvicorn's does when the
    transport is paused (a slow reader) and it awaits ``drain()``."""

    async def __call__(self, message: dict[str, Any]) -> None:
        await super().__call__(message)
        await asyncio.sleep(0)


SENDERS: dict[str, type[NoopSend]] = {"noop": NoopSend, "yielding": YieldingSend}


class Drain:
    """A socketpair whose far end a thread reads and discards."""

    def __init__(self) -> None:
        self.near, self.far = socket.socketpair()
        self.near.setblocking(True)
        self._thread = threading.Thread(target=self._run, daemon=True, name="drain")
        self._thread.start()

    def _run(self) -> None:
        while self.far.recv(1 << 20):
            pass

    def close(self) -> None:
        self.near.close()
        self._thread.join(5)
        self.far.close()


class H11Send:
    """What uvicorn's h11 protocol does per ASGI message: h11 framing, then
    a socket write (asyncio's transport.write sends at once when its buffer
    is empty). Blocking send on a drained socketpair: it never blocks long."""

    REQUEST = b"POST /api/agent/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"

    def __init__(self, drain: Drain) -> None:
        self.sock = drain.near
        self.conn = h11.Connection(h11.SERVER)
        self.conn.receive_data(self.REQUEST)
        self.conn.next_event()  # the Request
        self.conn.next_event()  # its EndOfMessage
        self.writes = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out = self.conn.send(h11.Response(status_code=message["status"], headers=message.get("headers", [])))
            self.sock.sendall(out)
            return
        body = message.get("body", b"")
        if body:
            self.writes += 1
        self.sock.sendall(self.conn.send(h11.Data(data=body)))
        if not message.get("more_body", False):
            self.sock.sendall(self.conn.send(h11.EndOfMessage()))


class OneWritePerEvent(EventStreamResponse):
    """The app's send loop without its coalescing: every event is a write.
    For comparison only; a copy of ``EventStreamResponse._send`` minus the
    inner ``receive_nowait`` loop."""

    async def _send(self, send: Any, chunks: Any) -> None:
        with anyio.fail_after(self.send_timeout_s):
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        while (data := await chunks.receive()) is not None:
            await self._write(send, {"type": "http.response.body", "body": data, "more_body": True})
        await self._write(send, {"type": "http.response.body", "body": b"", "more_body": False})


def _response(cls: type[EventStreamResponse], events: AsyncIterator[StreamEvent]) -> EventStreamResponse:
    return cls(events, encoder=SSEEncoder(), heartbeat_s=15.0, send_timeout_s=30.0, run_id="bench")


async def time_unit(unit: Unit, seconds: float, clock: Callable[[], float] = time.perf_counter) -> tuple[float, int]:
    """Run ``unit`` repeatedly for at least ``seconds`` of ``clock``; (elapsed, events)."""
    gc.collect()
    events = 0
    start = clock()
    deadline = start + seconds
    while True:
        events += await unit()
        now = clock()
        if now >= deadline:
            return now - start, events


# --------------------------------------------------------------------------------------------------
# The units
# --------------------------------------------------------------------------------------------------


def runner_units(client: Any, settings: ModelSettings = SETTINGS, layers: Sequence[str] = LAYERS) -> dict[str, Unit]:
    def make(runner: Any, message: str, layer: str) -> Unit:
        async def unit() -> int:
            events: AsyncIterator[StreamEvent] = runner(RunRequest(message), client, settings)
            if layer == "bare":
                return sum([1 async for _ in events])
            events = guard(events, deadline_s=DEADLINE_S, run_id="bench")
            if layer == "guard":
                return sum([1 async for _ in events])
            if layer == "encode":
                encoder = SSEEncoder()
                n = 0
                async for event in events:
                    n += 1
                    encoder.encode(n, event)
                return n
            send = NoopSend()
            counted = _Counted(events)
            await _response(EventStreamResponse, counted)(SCOPE, _never, send)
            return counted.n

        return unit

    units = {}
    for name, runner, message in (("agent", run_agent, AGENT_MESSAGE), ("workflow", run_workflow, WORKFLOW_MESSAGE)):
        for layer in layers:
            units[f"{name}/{layer}"] = make(runner, message, layer)
    return units


class _Counted:
    """Counts the events an async iterator yields (and forwards ``aclose``)."""

    def __init__(self, events: AsyncIterator[StreamEvent]) -> None:
        self.events = events
        self.n = 0

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> StreamEvent:
        event = await self.events.__anext__()
        self.n += 1
        return event

    async def aclose(self) -> None:
        await self.events.aclose()  # type: ignore[attr-defined]


async def record(client: OfflineChatClient) -> dict[str, Any]:
    """Events of one agent and one workflow run, and the agent's framework updates."""
    agent_events = [
        e async for e in guard(run_agent(RunRequest(AGENT_MESSAGE), client, SETTINGS), deadline_s=60, run_id="r")
    ]
    workflow_events = [
        e async for e in guard(run_workflow(RunRequest(WORKFLOW_MESSAGE), client, SETTINGS), deadline_s=60, run_id="r")
    ]
    agent = build_weather_agent(client)
    stream = agent.run(RunRequest(AGENT_MESSAGE).to_messages(), stream=True)
    updates = [u async for u in stream]
    return {"agent": agent_events, "workflow": workflow_events, "updates": updates}


def layer_units(recorded: dict[str, Any]) -> dict[str, Unit]:
    events: list[StreamEvent] = recorded["agent"][:-1] + recorded["workflow"]  # one terminal event, last
    updates = recorded["updates"]

    async def bare() -> int:
        return sum([1 async for _ in replay(events)])

    async def guarded() -> int:
        return sum([1 async for _ in guard(replay(events), deadline_s=DEADLINE_S, run_id="bench")])

    async def encode() -> int:
        encoder = SSEEncoder()
        for i, event in enumerate(events, 1):
            encoder.encode(i, event)
        return len(events)

    async def mapper_updates() -> int:
        mapper = UpdateMapper()
        for update in updates:
            mapper.feed(update, WEATHER_AGENT_NAME)
        mapper.flush()
        return len(updates)

    async def mapper_events() -> int:
        mapper = UpdateMapper()
        n = 0
        for update in updates:
            n += len(mapper.feed(update, WEATHER_AGENT_NAME))
        return n + len(mapper.flush())

    return {
        "replay (baseline for guard)": bare,
        "guard": guarded,
        "SSEEncoder.encode": encode,
        "UpdateMapper.feed per update": mapper_updates,
        "UpdateMapper.feed per event": mapper_events,
    }


def response_units(recorded: dict[str, Any], drain: Drain, writes: dict[str, list[int]]) -> dict[str, Unit]:
    events: list[StreamEvent] = recorded["agent"][:-1] + recorded["workflow"]

    def make(cls: type[EventStreamResponse], sender: str, streams: int, key: str) -> Unit:
        async def one() -> tuple[int, int]:
            send: Any = H11Send(drain) if sender == "h11+socket" else SENDERS[sender]()
            await _response(cls, replay(events))(SCOPE, _never, send)
            return len(events), send.writes

        async def unit() -> int:
            if streams == 1:
                results = [await one()]
            else:
                results = await asyncio.gather(*(one() for _ in range(streams)))
            writes[key].append(sum(w for _, w in results))
            return sum(n for n, _ in results)

        return unit

    units = {}
    for streams, sender in ((1, "noop"), (1, "h11+socket"), (1, "yielding"), (50, "h11+socket")):
        for name, cls in (("coalescing (app)", EventStreamResponse), ("one write per event", OneWritePerEvent)):
            key = f"{name}, {sender} send, {streams} stream{'s' if streams > 1 else ''}"
            writes[key] = []
            units[key] = make(cls, sender, streams, key)
    return units


async def openai_client_part(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Part 1b: the same runners over the app's real OpenAI client (the SDK's
    HTTP, SSE and chunk parsing), against ``bench.fake_model`` in its own
    process. Timed in this process's CPU time, so the fake's work and the
    loopback wait are not counted."""
    fake = FakeModelProcess(chunk_delay=args.openai_chunk_delay, max_seconds=300).start()
    try:
        settings = ModelSettings(
            provider="openai", model=MODEL, endpoint=fake.base_url, api_key=API_KEY, max_retries=0, timeout_s=30
        )
        client = create_chat_client(settings)
        units = runner_units(client, settings, layers=("bare", "response"))

        def concurrently(unit: Unit) -> Unit:
            async def run() -> int:  # keeps this process busy while the fake answers
                return sum(await asyncio.gather(*(unit() for _ in range(OPENAI_CONCURRENCY))))

            return run

        units = {name: concurrently(unit) for name, unit in units.items()}
        return await measure(units, args.rounds, args.seconds, clock=time.process_time)
    finally:
        fake.stop()


# --------------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------------


async def measure(
    units: dict[str, Unit], rounds: int, seconds: float, clock: Callable[[], float] = time.perf_counter
) -> dict[str, dict[str, Any]]:
    for unit in units.values():  # warm-up: first-call paths, caches
        await unit()
    per_round: dict[str, list[tuple[float, int]]] = {name: [] for name in units}
    for _ in range(rounds):
        for name, unit in units.items():
            per_round[name].append(await time_unit(unit, seconds, clock))
    out = {}
    for name, rows in per_round.items():
        us = [1e6 * elapsed / events for elapsed, events in rows]
        median = statistics.median(us)
        out[name] = {
            "us_per_event": round(median, 2),
            "us_per_event_min": round(min(us), 2),
            "events_per_s": round(1e6 / median) if median else None,
            "events_timed": sum(events for _, events in rows),
        }
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    client = OfflineChatClient(delay=0)
    recorded = await record(client)
    took: dict[str, float] = {}
    start = time.perf_counter()
    in_context = await measure(runner_units(client), args.rounds, args.seconds)
    took["in_context"], start = time.perf_counter() - start, time.perf_counter()
    with_openai = await openai_client_part(args)
    took["openai_client"], start = time.perf_counter() - start, time.perf_counter()
    layers = await measure(layer_units(recorded), args.rounds, args.seconds / 2)
    took["layers"], start = time.perf_counter() - start, time.perf_counter()
    drain = Drain()
    writes: dict[str, list[int]] = {}
    try:
        response = await measure(response_units(recorded, drain, writes), args.rounds, args.seconds / 2)
    finally:
        drain.close()
    took["response"] = time.perf_counter() - start
    events_per_unit = len(recorded["agent"]) + len(recorded["workflow"]) - 1
    for key, counts in writes.items():
        streams = 50 if "50 streams" in key else 1
        response[key]["writes_per_event"] = round(statistics.mean(counts) / (events_per_unit * streams), 3)
    return {
        "events_per_run": {"agent": len(recorded["agent"]), "workflow": len(recorded["workflow"])},
        "seconds_per_part": {k: round(v, 1) for k, v in took.items()},
        "in_context": in_context,
        "openai_client_cpu": with_openai,
        "openai_chunk_delay": args.openai_chunk_delay,
        "layers": layers,
        "response": response,
    }


def print_tables(result: dict[str, Any]) -> None:
    def table(title: str, rows: dict[str, dict[str, Any]], extra: str | None = None) -> None:
        print(f"\n  {title}")
        width = max(len(name) for name in rows) + 2
        header = f"    {'':<{width}}{'µs/event':>10}{'events/s':>12}" + (f"{extra:>16}" if extra else "")
        print(header)
        for name, row in rows.items():
            line = f"    {name:<{width}}{row['us_per_event']:>10.2f}{row['events_per_s'] or 0:>12,}"
            if extra:
                line += f"{fmt(row.get('writes_per_event')):>16}"
            print(line)

    n = result["events_per_run"]
    table(
        f"1. in context: offline model (delay 0), {n['agent']} events per agent run, {n['workflow']} per workflow",
        result["in_context"],
    )
    table(
        "1b. in context, OpenAI client over loopback to the fake model (own process, "
        f"chunk delay {result['openai_chunk_delay'] * 1000:g} ms): this process's CPU µs per event",
        result["openai_client_cpu"],
    )
    layers = dict(result["layers"])
    guard_only = layers["guard"]["us_per_event"] - layers["replay (baseline for guard)"]["us_per_event"]
    layers["guard, net of replay"] = {"us_per_event": guard_only, "events_per_s": round(1e6 / guard_only)}
    table("2. the app's layers alone, on recorded events", layers)
    table("3. EventStreamResponse send loop, recorded events (encoding included)", result["response"], "writes/event")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="minimum time per round and configuration")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per configuration (median reported)")
    parser.add_argument(
        "--openai-chunk-delay",
        type=float,
        default=0.0,
        help="part 1b: the fake model's pace per chunk (0.05 as in bench.load: slower, about 1 min)",
    )
    args = parser.parse_args(argv)
    if not 0.05 <= args.seconds <= 10 or not 1 <= args.rounds <= 20 or not 0 <= args.openai_chunk_delay <= 0.2:
        parser.error("--seconds must be 0.05..10, --rounds 1..20 and --openai-chunk-delay 0..0.2")
    start = time.perf_counter()
    result = asyncio.run(main_async(args))
    elapsed = time.perf_counter() - start
    print_tables(result)
    path = write_results(
        "overhead",
        {
            "command": " ".join(["python -m bench.overhead", *sys.argv[1:]]),
            "config": vars(args),
            "machine": machine(),
            "elapsed_s": round(elapsed, 1),
            **result,
        },
    )
    print(f"\n  took {elapsed:.1f} s; results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
