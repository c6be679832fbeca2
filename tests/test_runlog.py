"""The run log on its own: what a resumable run keeps under its byte cap,
and when a run nobody reads is cancelled.

Over HTTP these show up only as a 204 for a resume from too long ago, or a
run that ends with ``cancelled``; here each rule is checked where it is made.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from streaming import runlog
from streaming.events import Error, TextDelta, ToolResult
from streaming.runlog import MemoryStore, Run, approx_size

WORD = "x" * 40  # every event the same size: approx_size(TextDelta(WORD, ...))
SIZE = approx_size(TextDelta(WORD, "agent"))


@dataclass(eq=False)
class Reader:
    position: int


def capped_run(events: int) -> Run:
    run = Run(run_id="r")
    run.max_bytes = events * SIZE
    return run


def words(count: int) -> list[TextDelta]:
    return [TextDelta(f"{WORD[:-4]}{i:04d}", "agent") for i in range(count)]


def appended(run: Run, count: int) -> list[TextDelta]:
    sent = words(count)
    for event in sent:
        run.append(event)
    return sent


def test_a_run_over_its_byte_cap_keeps_its_newest_events_and_stays_under_the_cap() -> None:
    run = capped_run(10)
    sent = appended(run, 35)
    assert run.last_seq == 35
    assert 0 < run.base < 35, "the oldest events were dropped"
    assert run.events == sent[run.base :], "what is kept is the newest events, in order, under their own numbers"
    assert run.bytes == sum(approx_size(e) for e in run.events) <= run.max_bytes


def test_a_trim_drops_down_to_three_quarters_of_the_cap_not_more() -> None:
    """So trimming is rare (not once per event) and keeps all it can."""
    run = capped_run(20)
    target = run.max_bytes * 3 // 4
    trims = 0
    for event in words(100):
        base = run.base
        run.append(event)
        if run.base != base:
            trims += 1
            assert target - SIZE < run.bytes <= target
    assert 1 < trims < 20


def test_events_a_reader_has_not_sent_yet_are_never_dropped(caplog: pytest.LogCaptureFixture) -> None:
    run = capped_run(5)
    reader = Reader(position=3)
    run.attach(reader)
    with caplog.at_level(logging.WARNING, logger="streaming.runlog"):
        sent = appended(run, 30)
    assert run.base == 3, "everything after the reader's position is kept, over the cap"
    assert len(caplog.records) == 1, "one line for the one drop, none for each append that could drop nothing"
    assert run.events == sent[3:]
    reader.position = 30
    run.append(TextDelta(WORD, "agent"))
    assert run.bytes <= run.max_bytes and run.base > 3


def test_the_newest_event_is_kept_even_alone_over_the_cap() -> None:
    run = Run(run_id="r")
    run.max_bytes = SIZE // 2  # every event alone is over it
    appended(run, 3)
    assert (run.base, run.last_seq, len(run.events)) == (2, 3, 1)


async def test_a_run_nobody_comes_back_to_is_cancelled_when_its_window_ends() -> None:
    started = asyncio.Event()

    async def forever(emit) -> None:
        emit(TextDelta("hello", "agent"))
        started.set()
        await asyncio.Event().wait()

    store = MemoryStore()
    run = await store.start_run(run_id="r", window_s=0.05, producer=forever)
    reader = Reader(position=0)
    run.attach(reader)
    await started.wait()
    await run.detach(reader)
    await asyncio.wait_for(run.task, 5)
    assert run.cut_short and isinstance(run.events[-1], Error) and run.events[-1].code == "cancelled"
    assert run.events[-1].message == "The run was cancelled: no client was reading it."


async def test_a_reader_on_another_instance_keeps_the_run_going_and_a_lost_store_does_not() -> None:
    """Redis: when the window ends the store is asked for readers elsewhere;
    one there keeps the run, a store that cannot answer counts as none."""

    async def forever(emit) -> None:
        emit(TextDelta("hello", "agent"))
        await asyncio.Event().wait()

    answers: list[object] = [1, OSError("redis is gone")]
    asked: list[float] = []

    async def count_remote_readers() -> int:
        asked.append(asyncio.get_running_loop().time())
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    store = MemoryStore()
    run = await store.start_run(run_id="r", window_s=0.05, producer=forever)
    run.count_remote_readers = count_remote_readers
    reader = Reader(position=0)
    run.attach(reader)
    await asyncio.sleep(0.01)
    await run.detach(reader)
    await asyncio.sleep(0.3)
    assert not run.ended, "a reader elsewhere keeps the run"
    assert run.remote_readers == 1
    await asyncio.wait_for(run.task, 5)  # the next look (a second later) finds no store: cancelled
    assert answers == [] and run.remote_readers == 0
    assert 0.95 <= asked[1] - asked[0] < 1.9, "with a reader elsewhere the store is asked again a second later"
    assert run.events[-1] == Error("cancelled", run.events[-1].message)


async def finished(store: MemoryStore, count: int) -> list[Run]:
    """``count`` runs started and finished one after the other."""

    async def answer(emit) -> None:
        emit(TextDelta("hi", "agent"))

    runs = []
    for i in range(count):
        run = await store.start_run(run_id=f"r{i}", window_s=0.0, producer=answer)
        await asyncio.wait_for(run.task, 5)
        await asyncio.sleep(0.01)  # the run's cleanups (its place in the store) come right after
        runs.append(run)
    return runs


async def test_finished_runs_stay_for_their_retention_then_go() -> None:
    store = MemoryStore()
    store.runs.configure(retention_s=1.0, max_runs=100, max_run_bytes=0)
    early = await finished(store, 2)
    await asyncio.sleep(0.6)
    (late,) = await finished(store, 1)
    assert [await store.open_run(run.token) for run in [*early, late]] == [*early, late]
    await asyncio.sleep(0.5)  # the first two are past their retention, the last is not (by half a second)
    assert [await store.open_run(run.token) for run in [*early, late]] == [None, None, late]
    await asyncio.sleep(0.6)
    assert await store.open_run(late.token) is None and store.runs.runs == {}


async def test_over_max_runs_the_oldest_finished_runs_go_first() -> None:
    store = MemoryStore()
    store.runs.configure(retention_s=300, max_runs=2, max_run_bytes=0)
    runs = await finished(store, 4)
    assert [await store.open_run(run.token) for run in runs] == [None, None, *runs[2:]]


async def test_a_run_still_going_is_never_evicted() -> None:
    store = MemoryStore()
    store.runs.configure(retention_s=0.0, max_runs=1, max_run_bytes=0)

    async def forever(emit) -> None:
        await asyncio.Event().wait()

    going = await store.start_run(run_id="going", window_s=0.0, producer=forever)
    done = await finished(store, 2)
    assert await store.open_run(going.token) is going
    assert [await store.open_run(run.token) for run in done] == [None, None]
    await going.cancel()


async def test_each_run_gets_the_store_s_byte_cap() -> None:
    store = MemoryStore()
    store.runs.configure(retention_s=300, max_runs=10, max_run_bytes=5 * SIZE)

    async def chatty(emit) -> None:
        for event in words(30):
            emit(event)

    run = await store.start_run(run_id="r", window_s=0.0, producer=chatty)
    await asyncio.wait_for(run.task, 5)
    assert run.base > 0 and run.bytes <= 5 * SIZE


def test_tool_results_count_against_the_cap_too() -> None:
    run = Run(run_id="r")
    run.max_bytes = 10_000
    for i in range(50):
        run.append(ToolResult("agent", f"c{i}", "get_weather", {"report": "x" * 1000}, False))
    assert run.base > 0 and run.bytes <= run.max_bytes


def test_a_trim_that_can_drop_just_one_event_drops_it() -> None:
    run = Run(run_id="r")
    run.max_bytes = SIZE // 2  # every event alone is over it: each append drops all but the newest
    sent = appended(run, 2)
    assert (run.base, run.events, run.bytes) == (1, sent[1:], SIZE)


async def test_with_a_shared_store_readers_see_an_event_only_once_it_is_stored() -> None:
    """The Redis backend: a client must only hold ids the store can resume."""
    run = Run(run_id="r")
    run.stored(0)
    appended(run, 3)
    assert (run.last_seq, run.readable_seq) == (3, 0)
    waiter = asyncio.get_running_loop().create_future()
    run.subscribe(waiter)
    assert not waiter.done(), "nothing readable yet: the reader waits"
    run.stored(2)
    assert waiter.done() and run.readable_seq == 2, "storing wakes the reader, up to what is stored"
    run.stored(None)  # the store is gone: readers go on with the log alone
    assert run.readable_seq == 3


def test_every_append_is_handed_to_the_callbacks_after_it_is_in_the_log() -> None:
    run = Run(run_id="r")
    seen: list[tuple[int, int]] = []
    run.on_append(lambda r: seen.append((r.last_seq, len(r.events))))
    run.on_append(lambda r: seen.append((-r.last_seq, 0)))
    appended(run, 2)
    assert seen == [(1, 1), (-1, 0), (2, 2), (-2, 0)]


async def test_a_client_back_while_the_store_is_asked_keeps_the_run_and_leaving_again_starts_a_new_window() -> None:
    """The window ends, and while the store is asked for readers elsewhere a
    client resumes here: the run goes on, and when that client leaves too
    the run gets its window from then (not a leftover look a second later)."""

    async def forever(emit) -> None:
        emit(TextDelta("hello", "agent"))
        await asyncio.Event().wait()

    store = MemoryStore()
    run = await store.start_run(run_id="r", window_s=0.05, producer=forever)
    first, back = Reader(position=0), Reader(position=1)
    came_back = asyncio.Event()

    async def count_remote_readers() -> int:
        if not came_back.is_set():
            run.attach(back)
            came_back.set()
        return 0

    run.count_remote_readers = count_remote_readers
    run.attach(first)
    await asyncio.sleep(0.01)
    await run.detach(first)
    await came_back.wait()
    await asyncio.sleep(0.1)  # past the window: the client that came back holds the run
    assert not run.ended
    await run.detach(back)
    # Its own window (0.05 s), then cancelled. (Not wait_for: a timeout there
    # would cancel the run itself, and the run ends the same way.)
    await asyncio.wait({run.task}, timeout=0.7)
    assert run.ended and run.events[-1].code == "cancelled"


def test_one_store_per_store_url_made_on_first_use_and_reconfigured_on_every_call(monkeypatch) -> None:
    from settings import resume_settings
    from streaming import runlog
    from streaming.redislog import RedisStore

    monkeypatch.setattr(runlog, "_stores", {})  # a process that has not used a store yet
    memory = runlog.run_store(resume_settings({"RESUME_RETENTION_SECONDS": "5", "RESUME_MAX_RUNS": "3"}))
    assert isinstance(memory, MemoryStore)
    assert (memory.runs.retention_s, memory.runs.max_runs, memory.runs.max_run_bytes) == (5, 3, 4 << 20)
    again = runlog.run_store(resume_settings({"RESUME_MAX_RUN_BYTES": "65536"}))
    assert again is memory and (memory.runs.retention_s, memory.runs.max_run_bytes) == (300, 65536)

    url = "redis://127.0.0.1:9/0"  # never connected to here: the store connects on first use
    shared = runlog.run_store(resume_settings({"STREAM_STORE_URL": url, "STREAM_LEASE_SECONDS": "7"}))
    assert isinstance(shared, RedisStore) and (shared.url, shared.lease_s, shared.runs.max_runs) == (url, 7, 1000)
    assert runlog.run_store(resume_settings({"STREAM_STORE_URL": url})) is shared and shared.lease_s == 10
    assert runlog.run_store(resume_settings({})) is memory


async def test_evictions_are_logged_once_a_minute_with_the_count_since_the_last_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load a store over ``max_runs`` evicts on every new run: one line
    per eviction would flood the log, so one line per interval says how many."""
    from streaming import runlog

    monkeypatch.setattr(runlog, "EVICTION_LOG_INTERVAL_S", 0.5)
    store = MemoryStore()
    store.runs.configure(retention_s=300, max_runs=1, max_run_bytes=0)
    with caplog.at_level(logging.WARNING, logger="streaming.runlog"):
        runs = await finished(store, 4)  # three evictions within the interval
        await asyncio.sleep(0.6)
        runs += await finished(store, 1)  # the next interval: its eviction and the two unlogged ones
    lines = [r.args for r in caplog.records if "evicted" in r.msg]
    assert [(args[0], args[2], args[3]) for args in lines] == [(runs[0].run_id, 1, 1), (runs[3].run_id, 1, 3)]
    assert 299 <= lines[0][1] <= 300, "how early the run went: its retention less the time it was kept"


async def test_a_producer_that_raises_ends_its_run_with_an_internal_error() -> None:
    async def broken(emit) -> None:
        emit(TextDelta("hi", "agent"))
        raise RuntimeError("a bug")

    run = await MemoryStore().start_run(run_id="r", window_s=0.0, producer=broken)
    await asyncio.wait({run.task}, timeout=5)
    assert run.events[-1] == Error("internal_error", "The run failed unexpectedly.")
    assert run.ended and run.finished_at is not None and not run.cut_short


async def test_a_run_cancelled_before_its_first_step_still_ends_and_cleans_up() -> None:
    async def never(emit) -> None:  # pragma: no cover - cancelled before it starts
        emit(TextDelta("hi", "agent"))

    cleaned: list[str] = []
    run = Run(run_id="r")
    run.producer = never
    run.add_cleanup(lambda: cleaned.append("slot"))
    run.start()
    run.task.cancel()  # before the task's first step
    await asyncio.wait({run.task}, timeout=5)
    await asyncio.sleep(0.01)
    assert run.events == [Error("cancelled", "The run was cancelled: no client was reading it.")]
    assert run.ended and run.cut_short and run.finished_at is not None and run.producer is None
    assert cleaned == ["slot"]


async def test_cancelling_a_run_never_started_ends_it_and_wakes_its_readers() -> None:
    run = Run(run_id="r")
    waiter = asyncio.get_running_loop().create_future()
    run.subscribe(waiter)
    await run.cancel()
    assert run.ended and waiter.done()
    late = asyncio.get_running_loop().create_future()
    run.subscribe(late)
    assert late.done(), "a reader of an ended run with nothing left to read does not wait"


async def test_one_reader_leaving_does_not_cancel_a_run_another_still_reads() -> None:
    async def forever(emit) -> None:
        emit(TextDelta("hello", "agent"))
        await asyncio.Event().wait()

    run = await MemoryStore().start_run(run_id="r", window_s=0.0, producer=forever)
    staying, leaving = Reader(position=0), Reader(position=0)
    run.attach(staying)
    run.attach(leaving)
    await asyncio.sleep(0.01)
    await run.detach(leaving)
    await asyncio.sleep(0.05)
    assert not run.ended
    await run.detach(staying)  # the last one: with no window, cancelled at once
    assert run.ended and run.events[-1].code == "cancelled"


def test_a_trim_keeps_what_the_shared_store_has_not_stored_yet() -> None:
    """With Redis, the run's log is copied to the store behind the run: a
    trim must not drop events it has not copied (they would be missing on
    every other instance), even with no reader here."""
    run = capped_run(10)
    run.stored(0)  # the store's writer is lagging
    sent = appended(run, 6)
    run.stored(6)
    sent += appended(run, 29)
    assert run.base <= 6, "events past what the store holds were dropped"
    assert run.events == sent[run.base :]
    run.stored(35)
    sent += appended(run, 1)
    assert run.base > 6, "once stored, they may go"


def test_the_terminal_event_ends_the_run_at_once_and_nothing_follows_it() -> None:
    """Readers stop at the terminal event the moment it is appended (not
    when the run's task winds down), and nothing is appended after it."""
    run = Run(run_id="r")
    run.append(TextDelta("a", "agent"))
    assert not run.ended
    run.append(Error("timeout", "late"))
    assert run.ended and run.terminal_seq == 2
    run.append(TextDelta("b", "agent"))
    assert run.last_seq == 2


async def test_a_cleanup_that_hangs_does_not_hold_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runlog, "CLOSE_TIMEOUT_S", 0.05)
    released: list[str] = []

    async def produce(emit: Any) -> None:
        emit(TextDelta("a", "agent"))

    run = Run(run_id="r")
    run.producer = produce

    async def lease() -> None:  # a lease given back over the network: awaited, not left behind
        await asyncio.sleep(0.01)
        released.append("lease")

    run.add_cleanup(lambda: released.append("slot"))  # runs last (cleanups run newest first)
    run.add_cleanup(lease)
    run.add_cleanup(lambda: asyncio.Event().wait())  # a lease that never lets go
    run.start()
    assert run.task is not None
    done, _ = await asyncio.wait({run.task}, timeout=2)
    assert done, "the run's task ended although a cleanup hangs"
    assert released == ["lease", "slot"], "the cleanups after it still ran, each to its end"


def test_a_run_with_nothing_to_produce_is_not_started() -> None:
    """A run with no producer (one that only holds events) has no task to
    start: starting it does nothing, and it does not end by itself."""

    async def go() -> None:
        run = Run(run_id="r")
        run.start()
        await asyncio.sleep(0)
        assert run.task is None and not run.ended and run.events == []

    asyncio.run(go())


async def test_cancel_waits_for_the_run_at_most_its_close_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose producer ignores cancellation (a stuck close) does not
    hold whoever cancels it past ``CLOSE_TIMEOUT_S``."""
    monkeypatch.setattr(runlog, "CLOSE_TIMEOUT_S", 0.05)
    stop = asyncio.Event()

    async def stubborn(emit: Any) -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await stop.wait()

    run = Run(run_id="r")
    run.producer = stubborn
    run.start()
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(run.cancel(), 2)
    assert loop.time() - started < 1 and not run.ended
    stop.set()
    assert run.task is not None
    await asyncio.wait_for(run.task, 2)
    assert run.ended
