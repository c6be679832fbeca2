"""EventStreamResponse at the ASGI level: disconnects, heartbeats, slow
readers, coalescing. Independent of what the server reports as its spec."""

from __future__ import annotations

import asyncio
import logging
import re

from streaming import response
from streaming.encoders import SSEEncoder, TextEncoder
from streaming.events import Done, TextDelta
from streaming.response import EventStreamResponse
from streaming.runlog import Run

SCOPE = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET", "path": "/", "headers": []}


def never_disconnects():
    async def receive():
        await asyncio.Event().wait()

    return receive


async def test_disconnect_cancels_a_silent_run_at_once() -> None:
    cancelled = asyncio.Event()

    async def silent_run():
        try:
            await asyncio.sleep(60)  # waiting for a first token
            yield TextDelta("never", "x")
        finally:
            cancelled.set()

    gone = asyncio.Event()

    async def receive():
        await gone.wait()
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    response = EventStreamResponse(silent_run(), heartbeat_s=10)
    task = asyncio.create_task(response(SCOPE, receive, send))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    gone.set()
    await asyncio.wait_for(task, 2)
    assert cancelled.is_set() and response.disconnected
    assert loop.time() - started < 0.5
    assert sent[0]["type"] == "http.response.start"


async def test_heartbeat_while_nothing_else_is_sent() -> None:
    async def slow_run():
        await asyncio.sleep(0.35)
        yield Done("offline", "m")

    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    await EventStreamResponse(slow_run(), heartbeat_s=0.1)(SCOPE, never_disconnects(), send)
    wire = b"".join(bodies)
    assert 2 <= wire.count(b": ping\n\n") <= 4
    assert re.fullmatch(
        rb"(: ping\n\n)+id: [\w-]{22}:1\nevent: done\n"
        rb'data: {"provider":"offline","model":"m","usage":null,"elapsed_ms":0,"finish_reason":"stop"}\n\n',
        wire,
    )
    assert b"event: done" in bodies[-1]  # the terminal event ends the body


async def test_no_heartbeat_for_formats_without_one() -> None:
    async def slow_run():
        await asyncio.sleep(0.25)
        yield TextDelta("hi", "x")

    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append((message["body"], message["more_body"]))

    await EventStreamResponse(slow_run(), encoder=TextEncoder(), heartbeat_s=0.05)(SCOPE, never_disconnects(), send)
    assert bodies == [(b"hi", True), (b"", False)], "a source that just stops still ends the body"


async def test_a_reader_that_stops_reading_ends_the_run() -> None:
    cancelled = asyncio.Event()

    async def endless():
        try:
            while True:
                yield TextDelta("x" * 100, "a")
                await asyncio.sleep(0)
        finally:
            cancelled.set()

    async def stuck_send(message):
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the socket buffer is full and nobody reads

    response = EventStreamResponse(endless(), send_timeout_s=0.2)
    await asyncio.wait_for(response(SCOPE, never_disconnects(), stuck_send), 3)
    assert cancelled.is_set()


async def test_events_ready_together_go_out_in_one_write() -> None:
    async def burst():
        for i in range(50):
            yield TextDelta(str(i), "a")
        yield Done("offline", "m")

    writes = []

    async def send(message):
        if message["type"] == "http.response.body" and message["body"]:
            writes.append(message["body"])
        await asyncio.sleep(0.01)

    await EventStreamResponse(burst(), encoder=SSEEncoder())(SCOPE, never_disconnects(), send)
    joined = b"".join(writes)
    assert joined.count(b"\n\n") == 51 and joined.index(b'"0"') < joined.index(b'"49"')
    assert len(writes) < 10


async def test_a_send_that_fails_ends_the_run_quietly() -> None:
    cancelled = asyncio.Event()

    async def run():
        try:
            while True:
                yield TextDelta("x", "a")
                await asyncio.sleep(0.01)
        finally:
            cancelled.set()

    async def broken_send(message):
        if message["type"] == "http.response.body":
            raise OSError("connection reset")

    await asyncio.wait_for(EventStreamResponse(run())(SCOPE, never_disconnects(), broken_send), 3)
    assert cancelled.is_set()


async def test_the_disconnect_uvicorn_reports_after_a_complete_response_is_not_logged(caplog) -> None:
    """uvicorn answers ``receive()`` with ``http.disconnect`` as soon as a
    response is complete: that is not a client cutting a run short."""

    async def run():
        yield TextDelta("hi", "a")
        yield Done("offline", "m")

    complete = asyncio.Event()

    async def receive():
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            complete.set()
            await asyncio.sleep(0.01)  # the server's own work: the listener sees the disconnect meanwhile

    caplog.set_level("INFO", logger="streaming.response")
    await EventStreamResponse(run(), run_id="r1")(SCOPE, receive, send)
    assert "disconnected" not in caplog.text


async def test_a_client_leaving_mid_run_is_logged(caplog) -> None:
    async def run():
        yield TextDelta("hi", "a")
        await asyncio.sleep(30)
        yield Done("offline", "m")

    sent = asyncio.Event()

    async def receive():
        await sent.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.body":
            sent.set()

    caplog.set_level("INFO", logger="streaming.response")
    await asyncio.wait_for(EventStreamResponse(run(), run_id="r2")(SCOPE, receive, send), 3)
    assert "run r2: the client disconnected" in caplog.text


def _writes_of(events, coalesce_s: float = 0.0):
    async def go() -> list[bytes]:
        writes = []

        async def send(message):
            if message["type"] == "http.response.body" and message["body"]:
                writes.append(message["body"])

        await EventStreamResponse(events(), coalesce_s=coalesce_s)(SCOPE, never_disconnects(), send)
        return writes

    return go()


async def test_tokens_written_turn_after_turn_share_a_write_and_paced_ones_do_not_wait() -> None:
    async def every_turn():
        for i in range(10):
            yield TextDelta(str(i), "a")
            await asyncio.sleep(0)  # a model faster than the socket: a token on each turn of the loop
        yield Done("offline", "m")

    async def paced():
        for i in range(5):
            yield TextDelta(str(i), "a")
            await asyncio.sleep(0.005)  # a model waiting between tokens
        yield Done("offline", "m")

    fast, slow = await _writes_of(every_turn), await _writes_of(paced)
    assert b"".join(fast).count(b"\n\n") == 11
    assert len(fast) <= 2, "tokens appended on consecutive turns go out together"
    assert b"".join(slow).count(b"\n\n") == 6
    assert len(slow) >= 5, "a token that waited for the model is written as it comes"


async def test_tokens_coming_in_bursts_a_few_turns_apart_share_writes() -> None:
    async def bursts():
        for b in range(10):
            for i in range(3):  # a workflow hands on its agent's tokens a few at a time
                yield TextDelta(f"{b}.{i}", "a")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        yield Done("offline", "m")

    writes = await _writes_of(bursts)
    assert b"".join(writes).count(b"\n\n") == 31
    assert len(writes) <= 5, "once tokens come in bursts, a write waits a few quiet turns for the next"


def _bursts(gap_turns: int, count: int = 10, per_burst: int = 3):
    async def events():
        for b in range(count):
            for i in range(per_burst):
                yield TextDelta(f"{b}.{i}", "a")
            for _ in range(gap_turns):
                await asyncio.sleep(0)
        yield Done("offline", "m")

    return events


async def test_bursts_wait_three_quiet_turns_for_the_next_not_four() -> None:
    """Once a stream comes in bursts, three turns of the loop with nothing new
    end the wait: a burst three turns behind still shares the write, one four
    turns behind gets its own."""
    three, four = await _writes_of(_bursts(3)), await _writes_of(_bursts(4))
    assert b"".join(three).count(b"\n\n") == b"".join(four).count(b"\n\n") == 31
    assert len(three) <= 5
    assert len(four) >= 9


async def test_a_bursting_stream_that_pauses_is_written_at_once_not_held(monkeypatch) -> None:
    """The quiet turns end the wait, not the hold: with a hold far longer than
    the run, each burst still goes out before the pause after it."""
    monkeypatch.setattr(response, "HOLD_S", 60.0)

    async def paused_bursts():
        for b in range(3):
            for i in range(3):
                yield TextDelta(f"{b}.{i}", "a")
            if b < 2:
                await asyncio.sleep(0.01)
        yield Done("offline", "m")

    writes = await asyncio.wait_for(_writes_of(paused_bursts), 10)
    assert [w.count(b"\n\n") for w in writes] == [3, 3, 4]


async def test_a_model_writing_on_every_turn_is_not_held_back_past_the_hold() -> None:
    """Tokens on every turn of the loop, without end: the reader still
    writes each ``HOLD_S``. The model stops once four writes went out (or
    after 5 s, far past any hold): a reader that waited for a quiet turn
    would have written nothing by then. No wall-clock budget for the writes
    themselves, so a busy machine pausing this process cannot fail it."""
    writes: list[bytes] = []

    async def endless():
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 5
        i = 0
        while len(writes) < 4 and loop.time() < give_up:
            yield TextDelta(str(i), "a")
            i += 1
            await asyncio.sleep(0)
        yield Done("offline", "m")

    async def send(message):
        if message["type"] == "http.response.body" and message["body"]:
            writes.append(message["body"])

    await EventStreamResponse(endless())(SCOPE, never_disconnects(), send)
    assert len(writes) >= 4, "a write waits at most HOLD_S for more tokens, then goes"
    assert b"event: done" not in b"".join(writes[:4]), "the first writes went out while the model was still writing"


async def test_coalesce_window_lets_tokens_arriving_right_behind_share_a_write() -> None:
    async def trickle():
        for i in range(10):
            yield TextDelta(str(i), "a")
            await asyncio.sleep(0.002)  # tokens a timer apart: each would be its own write
        yield Done("offline", "m")

    at_once, coalesced = await _writes_of(trickle), await _writes_of(trickle, 0.05)
    assert b"".join(at_once).count(b"\n\n") == b"".join(coalesced).count(b"\n\n") == 11
    assert len(at_once) >= 8, "without a window each token is written as it comes"
    assert len(coalesced) <= 2


class ModelStream:
    """An async iterator that is not a generator (an SDK stream, say): it
    holds a connection until ``aclose``, which takes a moment of its own."""

    def __init__(self, *, close_hangs: bool = False) -> None:
        self.close_hangs = close_hangs
        self.closed = asyncio.Event()

    def __aiter__(self) -> ModelStream:
        return self

    async def __anext__(self) -> TextDelta:
        await asyncio.Event().wait()  # the model is thinking
        raise StopAsyncIteration

    async def aclose(self) -> None:
        await asyncio.sleep(0.01)  # the connection's goodbye
        if self.close_hangs:
            await asyncio.Event().wait()
        self.closed.set()


async def _reader_leaves(stream: ModelStream) -> EventStreamResponse:
    """Serve ``stream`` to a client that leaves after 50 ms; returns once the
    response has ended."""
    gone = asyncio.Event()

    async def receive():
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    response = EventStreamResponse(stream, heartbeat_s=10)
    task = asyncio.create_task(response(SCOPE, receive, send))
    await asyncio.sleep(0.05)
    gone.set()
    await asyncio.wait_for(task, 10)
    return response


async def test_a_reader_leaving_closes_the_source_even_while_the_run_is_cancelled() -> None:
    stream = ModelStream()
    await _reader_leaves(stream)
    await asyncio.wait_for(stream.closed.wait(), 5)


async def test_a_source_whose_close_hangs_does_not_hold_the_run() -> None:
    stream = ModelStream(close_hangs=True)
    response = await _reader_leaves(stream)
    ended, _ = await asyncio.wait({response.run.task}, timeout=10)
    assert ended, "the run's close is bounded, whatever the source does"
    assert not stream.closed.is_set()


async def test_a_cancellation_from_outside_goes_on_and_still_ends_the_run() -> None:
    """The server stopping cancels the response's task: unlike a disconnect
    (which the response absorbs and ends quietly), that cancellation must
    reach the server, and the run must still be cancelled and closed."""
    stream = ModelStream()
    response = EventStreamResponse(stream, heartbeat_s=10)
    task = asyncio.create_task(response(SCOPE, never_disconnects(), _ignore))
    await asyncio.sleep(0.05)
    task.cancel()
    assert await _ends_cancelled(task), "the response swallowed a cancellation that was not its own"
    assert response.run.ended and stream.closed.is_set()


async def test_two_reasons_to_stop_in_one_turn_end_the_stream_once_and_quietly() -> None:
    """The disconnect listener and the watcher may both stop the stream in
    the same turn of the loop: the response still ends quietly (its own
    cancellation absorbed once), not as a cancelled task."""
    stream = ModelStream()
    response = EventStreamResponse(stream, heartbeat_s=10)
    task = asyncio.create_task(response(SCOPE, never_disconnects(), _ignore))
    await asyncio.sleep(0.05)
    response._stop(task)  # the client left...
    response._stop(task)  # ...and its last write stalled, in the same turn
    await asyncio.wait_for(task, 10)
    assert not task.cancelled() and stream.closed.is_set()


async def _ignore(message) -> None:
    pass


async def _ends_cancelled(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` ends by raising ``CancelledError`` (within 10 s)."""
    try:
        await asyncio.wait_for(task, 10)
    except asyncio.CancelledError:
        return True
    return False


async def test_a_client_that_never_takes_the_response_start_is_cut_after_send_timeout(caplog) -> None:
    """The response's start is a write like any other: a client that does not
    take it cannot hold the run past ``send_timeout_s``."""
    stream = ModelStream()

    async def send(message):
        await asyncio.Event().wait()  # the headers never leave: nobody reads

    caplog.set_level("INFO", logger="streaming.response")
    response = EventStreamResponse(stream, send_timeout_s=0.2, heartbeat_s=10, run_id="r3")
    await asyncio.wait_for(response(SCOPE, never_disconnects(), send), 5)
    assert response.run.ended and stream.closed.is_set()
    cut = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(cut) == 1 and "run r3" in cut[0].getMessage()


async def test_a_send_that_fails_is_logged_under_the_run_id(caplog) -> None:
    async def run():
        yield TextDelta("x", "a")
        yield Done("offline", "m")

    async def broken_send(message):
        if message["type"] == "http.response.body":
            raise OSError("connection reset")

    caplog.set_level("INFO", logger="streaming.response")
    await asyncio.wait_for(EventStreamResponse(run(), run_id="r4")(SCOPE, never_disconnects(), broken_send), 3)
    assert [r.getMessage().startswith("run r4") for r in caplog.records if r.name == "streaming.response"] == [True]


async def test_a_reader_that_stops_reading_is_logged_under_the_run_id(caplog) -> None:
    async def endless():
        while True:
            yield TextDelta("x", "a")
            await asyncio.sleep(0.01)

    async def stuck_send(message):
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()

    caplog.set_level("INFO", logger="streaming.response")
    response = EventStreamResponse(endless(), send_timeout_s=0.2, run_id="r5")
    await asyncio.wait_for(response(SCOPE, never_disconnects(), stuck_send), 3)
    cut = [r for r in caplog.records if r.name == "streaming.response" and r.levelname == "WARNING"]
    assert len(cut) == 1 and "run r5" in cut[0].getMessage()


async def test_a_cancellation_from_outside_goes_on_even_when_the_client_left_in_the_same_turn() -> None:
    """The server stopping while the client leaves: the response absorbs its
    own cancellation only, the server's still reaches it."""
    stream = ModelStream()
    response = EventStreamResponse(stream, heartbeat_s=10)
    task = asyncio.create_task(response(SCOPE, never_disconnects(), _ignore))
    await asyncio.sleep(0.05)
    response._stop(task)  # the client left...
    task.cancel()  # ...and the server is stopping
    assert await _ends_cancelled(task), "the response swallowed the server's cancellation with its own"
    assert stream.closed.is_set()


async def test_the_response_ends_once_the_run_it_was_the_last_reader_of_is_closed(monkeypatch) -> None:
    """A reader leaving waits for its run's close (bounded), so the model
    call is over when the response is: a close that takes over a second
    still finishes first."""

    class SlowClose(ModelStream):
        async def aclose(self) -> None:
            await asyncio.sleep(1.4)  # over half the run's close bound (2 s)
            self.closed.set()

    stream = SlowClose()
    await _reader_leaves(stream)
    assert stream.closed.is_set()


async def test_a_source_that_fails_is_logged_under_the_response_s_run_id(caplog) -> None:
    """A plain iterator's run relays events as they are (no error mapping):
    its failure is a bug, logged with its traceback under the run id."""

    async def broken():
        yield TextDelta("x", "a")
        raise RuntimeError("a bug")

    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    caplog.set_level("ERROR")
    await asyncio.wait_for(EventStreamResponse(broken(), run_id="r6")(SCOPE, never_disconnects(), send), 3)
    failed = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failed) == 1 and "run r6" in failed[0].getMessage() and failed[0].exc_info
    assert b"event: error" in b"".join(bodies)


async def test_a_client_slow_to_take_the_headers_is_still_cut_when_it_stops_reading_later() -> None:
    """Keep-alives fall due while the response's start is still being sent
    (nothing is waiting to be woken then): the watcher lets that pass and
    still ends a later write that never completes."""
    stream = ModelStream()

    async def run():
        yield TextDelta("hi", "a")
        async for event in stream:
            yield event

    async def send(message):
        if message["type"] == "http.response.start":
            await asyncio.sleep(0.3)  # the headers take a while: several keep-alive intervals
        elif message["body"]:
            await asyncio.Event().wait()  # then the client stops reading

    response = EventStreamResponse(run(), heartbeat_s=0.05, send_timeout_s=1.0)
    await asyncio.wait_for(response(SCOPE, never_disconnects(), send), 5)
    assert response.run.ended


async def test_a_source_without_aclose_is_streamed_and_ends_cleanly(caplog) -> None:
    """Any async iterator will do, not only generators: one with nothing to
    close ends its run as it ended, with no error."""

    class Plain:
        def __init__(self) -> None:
            self.events = [TextDelta("hi", "a"), Done("offline", "m")]

        def __aiter__(self):
            return self

        async def __anext__(self):
            if not self.events:
                raise StopAsyncIteration
            return self.events.pop(0)

    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    caplog.set_level("WARNING")
    await asyncio.wait_for(EventStreamResponse(Plain())(SCOPE, never_disconnects(), send), 3)
    wire = b"".join(bodies)
    assert b"event: done" in wire and b"event: error" not in wire
    assert not caplog.records


async def test_a_reader_waiting_for_the_store_while_the_run_trims_gets_every_event_after_its_id() -> None:
    """A resumed reader sees only what the store holds (Redis). The run may
    drop old events past its byte cap, up to the reader's id, while the
    reader waits for the store or gathers a write: it goes on from what the
    log still holds, sends only what is stored, every event after its id
    once, in order, as it becomes readable."""
    from streaming.events import Done
    from streaming.runlog import Run

    def event(i: int) -> TextDelta:
        return TextDelta(f"{i:04d}" + "x" * 1000, "a")

    run = Run(run_id="r7")
    run.max_bytes = 64 * 1024
    for i in range(10):
        run.append(event(i))
    run.stored(0)  # nothing stored yet: the reader waits
    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    def ids() -> list[int]:
        wire = b"".join(bodies).decode()
        return [int(line.rsplit(":", 1)[1]) for line in wire.splitlines() if line.startswith("id: ")]

    response = EventStreamResponse(run, after=5, heartbeat_s=10)
    task = asyncio.create_task(response(SCOPE, never_disconnects(), send))
    await asyncio.sleep(0.02)
    run.stored(10)  # the first ten are stored: the reader wakes and gathers its write...
    await asyncio.sleep(0)
    for i in range(10, 200):  # ...while about 190 KB more come: the run drops its oldest, up to the reader's id
        run.append(event(i))
    assert run.base == 5
    await asyncio.sleep(0.05)
    assert ids() == list(range(6, 11)), "what is stored after the reader's id, and nothing past it"
    run.append(Done("offline", "m"))
    run.stored(run.last_seq)
    await asyncio.wait_for(task, 5)
    assert ids() == list(range(6, 202))
    wire = b"".join(bodies).decode()
    assert wire.count('"text":"0006') == 1 and "event: done" in wire


async def test_single_tokens_two_turns_apart_are_written_as_they_come_and_pairs_share_writes() -> None:
    """One token at a time is a paced model: each goes out as it comes. Two
    at a time is a burst: the write waits a few quiet turns for the next."""
    singles, pairs = await _writes_of(_bursts(2, per_burst=1)), await _writes_of(_bursts(2, per_burst=2))
    assert b"".join(singles).count(b"\n\n") == 11 and b"".join(pairs).count(b"\n\n") == 21
    assert len(singles) >= 9
    assert len(pairs) <= 5


async def test_the_last_events_and_the_end_of_the_body_share_one_write() -> None:
    """A run's terminal event goes out with ``more_body=False`` (one socket
    write for both under uvicorn), and nothing is sent after it."""

    async def answer():
        yield TextDelta("a", "x")
        await asyncio.sleep(0.01)
        yield TextDelta("b", "x")
        yield Done("offline", "m")

    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append((message["body"], message.get("more_body", False)))

    await EventStreamResponse(answer(), encoder=SSEEncoder())(SCOPE, never_disconnects(), send)
    last, more = bodies[-1]
    assert more is False and b"event: done" in last
    assert all(more for _, more in bodies[:-1]) and all(body for body, _ in bodies)


async def test_keep_alives_go_on_after_a_write_that_waited_out_a_coalescing_window() -> None:
    """A keep-alive may fall due while a write gathers events (nothing idle
    to wake): the watcher lets it pass and keeps the stream alive after."""

    async def run():
        await asyncio.sleep(0.15)
        yield TextDelta("a", "x")
        await asyncio.sleep(0.6)  # silent again: keep-alives
        yield Done("offline", "m")

    bodies = []

    async def send(message):
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    response = EventStreamResponse(run(), heartbeat_s=0.1, coalesce_s=0.3)
    await asyncio.wait_for(response(SCOPE, never_disconnects(), send), 5)
    after_text = bodies[next(i for i, body in enumerate(bodies) if b'"text":"a"' in body) + 1 :]
    assert after_text.count(b": ping\n\n") >= 2, bodies


async def test_a_disconnect_listener_that_fails_ends_the_stream_and_is_logged(caplog) -> None:
    """If the server's ``receive`` raises, nothing would notice the client
    leave: the stream ends (the run is cancelled), logged with the run id."""

    async def receive():
        await asyncio.sleep(0.02)
        raise RuntimeError("receive broke")

    stream = ModelStream()
    response = EventStreamResponse(stream, heartbeat_s=10, run_id="run-7")
    with caplog.at_level(logging.ERROR, logger="streaming.response"):
        task = asyncio.create_task(response(SCOPE, receive, _ignore))
        done, _ = await asyncio.wait({task}, timeout=5)  # not wait_for: its own cancel would end it too
    assert done, "the stream went on after its disconnect listener failed"
    assert stream.closed.is_set() and response.run.ended
    assert "run run-7: the response's _listen_for_disconnect failed; ending the stream" in caplog.text
    assert "receive broke" in caplog.text


async def test_a_resumed_reader_whose_run_trims_while_the_headers_go_sends_what_follows_its_id() -> None:
    """A reader resuming after event 10 of a run over its byte cap: once it
    is attached, the run appends enough to drop events up to 10 (the reader
    skips them anyway, and its place keeps the rest). It sends exactly what
    follows its id, under the events' own numbers."""
    run = Run(run_id="r")
    run.max_bytes = 3000
    for i in range(10):
        run.append(TextDelta(f"word {i:03d} ", "a"))
    bodies: list[bytes] = []

    async def send(message):
        if message["type"] == "http.response.start":
            for i in range(10, 60):
                run.append(TextDelta(f"word {i:03d} ", "a"))
            run.append(Done("offline", "m"))
            assert run.base > 0, "the run trimmed events the reader had not encoded yet"
        elif message["body"]:
            bodies.append(message["body"])

    await asyncio.wait_for(EventStreamResponse(run, after=10)(SCOPE, never_disconnects(), send), 5)
    ids = re.findall(rb"id: [\w-]+:(\d+)", b"".join(bodies))
    assert [int(n) for n in ids] == list(range(11, 62))


async def test_a_helpers_late_news_cancels_nothing_once_the_stream_is_over() -> None:
    """A helper's failure reported after the body ended (its callback runs a
    turn later) must not cancel the task, which is then detaching the run or
    back in the server's hands."""

    async def answer():
        yield TextDelta("a", "x")
        yield Done("offline", "m")

    response = EventStreamResponse(answer())
    await response(SCOPE, never_disconnects(), _ignore)
    server_task = asyncio.create_task(asyncio.sleep(0.02))
    response._stop(server_task)
    await server_task  # not cancelled
