"""The run log on its own: what a resumable run keeps under its byte cap,
and when a run nobody reads is cancelled.

Over HTTP these show up only as a 204 for a resume from too long ago, or a
run that ends with ``cancelled``; here each rule is checked where it is made.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

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


def test_events_a_reader_has_not_sent_yet_are_never_dropped() -> None:
    run = capped_run(5)
    reader = Reader(position=3)
    run.attach(reader)
    sent = appended(run, 30)
    assert run.base == 3, "everything after the reader's position is kept, over the cap"
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

    async def count_remote_readers() -> int:
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
