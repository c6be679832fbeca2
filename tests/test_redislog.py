"""The Redis run log in-process, against a real ``redis-server`` (Debian's,
on a free loopback port, no persistence): what the running instance writes
where, and what another instance reads back.

``tests/test_resume_redis.py`` drives the same code through two app
processes; here each rule is checked where it is made, and a second
:class:`RedisStore` in this process stands for the other instance.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from streaming import redislog
from streaming.events import AgentStarted, Done, Error, StreamEvent, TextDelta, ToolCall, ToolResult
from streaming.redislog import (
    BLOCK_MS,
    CONNECT_TIMEOUT_S,
    ENTRA_RECYCLE_S,
    SOCKET_TIMEOUT_S,
    EntraIdCredentials,
    RedisStore,
    _event_types,
    _object_id,
    decode_event,
    encode_event,
    run_lost,
)
from streaming.runlog import Run, StoreUnavailable
from tests.support import RedisServer, refusing_port


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of the test's own, for tests that stop it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A plain client: what the stores wrote, as an operator would see it."""
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


Make = Callable[..., RedisStore]


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Make]:
    """``stores()`` makes a store (an instance of the app) on ``redis_server``;
    each is closed, its runs cancelled, after the test."""
    made: list[RedisStore] = []

    def make(url: str | None = None, *, lease_s: float = 10.0, retention_s: float = 300.0, **caps: int) -> RedisStore:
        store = RedisStore(url or redis_server.url, lease_s=lease_s)
        store.runs.configure(
            retention_s=retention_s, max_runs=caps.get("max_runs", 1000), max_run_bytes=caps.get("max_run_bytes", 0)
        )
        made.append(store)
        return store

    yield make
    for store in made:
        for run in [*store.runs.runs.values(), *store.mirrors.values()]:
            await run.cancel()
            publisher = getattr(run.count_remote_readers, "__self__", None)
            if publisher is not None and publisher.task is not None:  # its last write done before the pool closes
                await asyncio.wait({publisher.task}, timeout=10)
        if store._redis is not None:
            await store._redis.aclose()


@dataclass(eq=False)
class Reader:
    position: int


class Script:
    """A run's producer driven by the test: ``send`` hands it events; it
    returns after a terminal one (or ``None``)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self.seen: list[int] = []  # the run's readable_seq right after each emit
        self.run: Run | None = None

    def send(self, *events: StreamEvent | None) -> None:
        for event in events:
            self.queue.put_nowait(event)

    async def __call__(self, emit: Callable[[StreamEvent], None]) -> None:
        while (event := await self.queue.get()) is not None:
            emit(event)
            if self.run is not None:
                self.seen.append(self.run.readable_seq)
            if event.terminal:
                return


async def until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Wait (polling) until ``check()`` (sync or async) is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


async def started(store: RedisStore, run_id: str = "r1") -> tuple[Run, Script]:
    script = Script()
    run = await store.start_run(run_id=run_id, window_s=60, producer=script)
    script.run = run
    return run, script


async def absent(redis: Any, name: str) -> bool:
    return not await redis.exists(name)


def key(token: str, part: str) -> str:
    return f"sse:{token}:{part}"


async def stored_events(redis: Any, token: str) -> list[tuple[str, StreamEvent]]:
    return [(entry_id, decode_event(fields["e"])) for entry_id, fields in await redis.xrange(key(token, "events"))]


EVENTS = [
    AgentStarted("weather"),
    TextDelta("Zürich\n", "weather"),
    ToolCall("weather", "c1", "get_weather", {"location": "Oslo"}),
    ToolResult("weather", "c1", "get_weather", {"x": [1, 2]}, is_error=True),
]
DONE = Done("offline", "m", {"total_tokens": 3}, 12)


# ------------------------------------------------------------------------------ the running instance


async def test_a_run_is_mirrored_event_by_event_under_its_documented_keys(stores: Make, redis: Any) -> None:
    """The keys the module documents, as an operator finds them with
    ``redis-cli``: the stream ``0-<n>``, the meta hash, the lease; every one
    expiring."""
    store = stores(retention_s=7, lease_s=1000)
    run, script = await started(store)
    token = run.token
    assert await redis.hgetall(key(token, "meta")) == {"run_id": "r1", "instance": store.instance}
    longest_deadline = 3600  # RUN_DEADLINE_SECONDS' maximum: keys of a running run outlive it
    assert longest_deadline - 5 <= await redis.ttl(key(token, "meta")) <= longest_deadline
    assert await redis.get(key(token, "lease")) == store.instance
    assert 990_000 < await redis.pttl(key(token, "lease")) <= 1_000_000, "the lease lasts STREAM_LEASE_SECONDS"

    script.send(*EVENTS)
    await until(lambda: run.stored_seq == 4, "the four events stored")
    assert await stored_events(redis, token) == [(f"0-{n}", e) for n, e in enumerate(EVENTS, 1)]
    assert await redis.hget(key(token, "meta"), "terminal") is None

    await redis.zadd(key(token, "readers"), {"elsewhere": time.time() + 60})
    script.send(DONE)
    await until(lambda: redis.hget(key(token, "meta"), "terminal"), "the terminal event's number recorded")
    assert await redis.hget(key(token, "meta"), "terminal") == "5"
    assert [e for _, e in await stored_events(redis, token)] == [*EVENTS, DONE]
    assert run.stored_seq == 5 and run.readable_seq == 5
    assert not await redis.exists(key(token, "lease")), "a finished run holds no lease"
    assert not await redis.exists(key(token, "readers"))
    for part in ("events", "meta"):
        assert 0 < await redis.ttl(key(token, part)) <= 7, f"{part} kept RESUME_RETENTION_SECONDS, then gone"


async def test_with_no_retention_a_finished_run_is_still_kept_a_second(stores: Make, redis: Any) -> None:
    """``RESUME_RETENTION_SECONDS=0``: a reader elsewhere that was reading
    the end as it came still finds it (an expiry of 0 would delete it at once)."""
    run, script = await started(stores(retention_s=0))
    script.send(EVENTS[0], DONE)
    await until(lambda: redis.hget(key(run.token, "meta"), "terminal"), "finished in Redis")
    assert [await redis.ttl(key(run.token, part)) for part in ("events", "meta")] == [1, 1]


async def test_readers_here_see_an_event_only_once_redis_holds_it(stores: Make, redis: Any) -> None:
    """So any id a client of the running instance holds can be resumed on
    another instance."""
    run, script = await started(stores())
    assert run.readable_seq == 0
    script.send(EVENTS[0])
    await until(lambda: run.readable_seq == 1, "the event readable once stored")
    script.send(EVENTS[1], EVENTS[2])
    await until(lambda: run.readable_seq == 3, "the events readable once stored")
    assert script.seen == [0, 1, 1], "an appended event is not readable before the store has it"
    assert await redis.xlen(key(run.token, "events")) == 3


async def test_events_reach_redis_at_once_not_at_the_next_lease_refresh(stores: Make, redis: Any) -> None:
    """A lease of 300 s is refreshed every 100 s: each append and the run's
    end wake the publisher, whatever the lease."""
    run, script = await started(stores(lease_s=300))
    script.send(EVENTS[0])
    await until(lambda: redis.xlen(key(run.token, "events")), "the event in Redis", timeout=20)
    script.send(None)  # the producer returns without a terminal event: the run ends all the same
    await until(lambda: run.ended, "the run ended")
    await until(lambda: absent(redis, key(run.token, "lease")), "the lease given up", timeout=20)
    assert await redis.hget(key(run.token, "meta"), "terminal") is None, "no terminal event to point at"
    assert 0 < await redis.ttl(key(run.token, "meta")) <= 300


async def test_the_lease_is_refreshed_while_the_run_goes(stores: Make, redis: Any) -> None:
    """With a 1.5 s lease (refreshed every 0.5 s), an idle run keeps its
    lease for several leases' time, and the event stream it created gets an
    expiry too."""
    store = stores(lease_s=1.5)
    run, script = await started(store)
    token = run.token
    script.send(EVENTS[0])
    await until(lambda: run.stored_seq == 1, "stored")
    ends = time.monotonic() + 4
    while time.monotonic() < ends:
        assert await redis.pttl(key(token, "lease")) > 0, "the lease lapsed while the run was going"
        await asyncio.sleep(0.05)
    assert await redis.get(key(token, "lease")) == store.instance
    assert 0 < await redis.ttl(key(token, "events")) <= 3600, "a refresh gives the stream its expiry"


async def test_the_lease_is_renewed_each_time_a_third_of_it_has_passed(
    stores: Make, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the publisher's own clock (here the test's): a 3000 s lease is
    renewed, to a whole lease, at 1000 s, 2000 s, ..., not between. Each
    renewal also gives the event stream its expiry."""
    clock = [0.0]
    monkeypatch.setattr(redislog, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    run, script = await started(stores(lease_s=3000))
    lease, events = key(run.token, "lease"), key(run.token, "events")

    async def renewed_at(at: float) -> bool:
        """Whether the publisher, woken by an event at ``at``, renews the lease."""
        await redis.pexpire(lease, 60_000)
        if await redis.exists(events):
            await redis.persist(events)
        clock[0] = at
        seq = run.last_seq + 1
        script.send(TextDelta(str(at), "w"))
        await until(lambda: run.stored_seq == seq, "stored")
        pttl, ttl = await redis.pttl(lease), await redis.ttl(events)
        if pttl <= 60_000:
            assert ttl == -1
            return False
        assert 2_990_000 < pttl <= 3_000_000 and 3590 < ttl <= 3600
        return True

    assert [await renewed_at(at) for at in (10.0, 999.5, 1000.0, 1000.5, 1999.0, 2000.0, 2001.0)] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
    ]


async def test_readers_on_other_instances_are_counted_at_each_refresh(stores: Make, redis: Any) -> None:
    run, _ = await started(stores(lease_s=1))
    readers = key(run.token, "readers")
    await redis.zadd(readers, {"b:1": time.time() + 60, "b:2": time.time() + 60, "gone": time.time() - 1})
    await until(lambda: run.remote_readers == 2, "two live readers counted")
    assert await redis.zrange(readers, 0, -1) == ["b:1", "b:2"], "an expired presence is dropped"
    assert run.present
    await redis.zrem(readers, "b:1", "b:2")
    await until(lambda: run.remote_readers == 0, "no reader counted")


async def test_count_readers_asks_redis_now(stores: Make, redis: Any) -> None:
    """What the end of the resume window asks before cancelling a run."""
    run, _ = await started(stores())
    readers = key(run.token, "readers")
    assert run.count_remote_readers is not None
    assert await run.count_remote_readers() == 0
    await redis.zadd(readers, {"b:1": time.time() + 60, "gone": time.time() - 1})
    assert await run.count_remote_readers() == 1
    assert await redis.zrange(readers, 0, -1) == ["b:1"]


async def test_a_run_over_its_cap_keeps_what_redis_has_not_stored_so_redis_has_every_event(
    stores: Make, redis: Any
) -> None:
    """Events taken faster than the publisher writes them, past the byte
    cap: the local log keeps them until they are stored (a gap in Redis
    would hand another instance's readers the wrong events), and trims
    once they are."""
    store = stores(max_run_bytes=2000)
    run, script = await started(store)
    words = [TextDelta(f"word {i:03d} " * 5, "weather") for i in range(40)]
    script.send(*words)  # taken in one go, before the publisher runs
    await until(lambda: run.stored_seq == 40, "all stored")
    entries = await stored_events(redis, run.token)
    assert [entry_id for entry_id, _ in entries] == [f"0-{n}" for n in range(1, 41)]
    assert [e for _, e in entries] == words
    more = TextDelta("word 040 " * 5, "weather")
    script.send(more)
    await until(lambda: run.last_seq == 41, "taken")
    assert run.base > 0 and run.bytes <= 2000, "stored events are trimmed again"
    assert run.events[-1] == more


async def test_redis_down_at_start_refuses_the_run_and_keeps_nothing(stores: Make) -> None:
    with refusing_port() as port:
        store = stores(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(StoreUnavailable, match=r"^ConnectionError"):
            await started(store)
        assert store.runs.runs == {}, "the refused run is not kept"
        with pytest.raises(StoreUnavailable, match=r"^ConnectionError"):
            await store.open_run("A" * 22)


async def test_redis_lost_mid_run_the_run_goes_on_here_and_says_so(
    stores: Make, own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    run, script = await started(stores(own_server.url))
    script.send(EVENTS[0])
    await until(lambda: run.stored_seq == 1, "stored")
    await redis_remote_readers(run, own_server)
    own_server.stop()
    with caplog.at_level(logging.ERROR, logger="streaming.redislog"):
        script.send(EVENTS[1])
        await until(lambda: run.stored_seq is None, "the run going on without the store", timeout=30)
        assert run.readable_seq == 2, "local readers read on"
        assert run.remote_readers == 0, "readers elsewhere cannot be reached: they no longer keep the run"
        assert any("run r1:" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
        script.send(DONE)
        await until(lambda: run.ended, "the run ended")
        await asyncio.wait_for(run.task, 10)  # type: ignore[arg-type]
    assert run.events[-1] == DONE and not run.cut_short


async def redis_remote_readers(run: Run, server: RedisServer) -> None:
    """A reader elsewhere, counted: so losing Redis visibly resets the count."""
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        await client.zadd(key(run.token, "readers"), {"b:1": time.time() + 60})
        run.remote_readers = await run.count_remote_readers()  # type: ignore[misc]
        assert run.remote_readers == 1
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------ another instance


async def test_another_instance_replays_and_tails_a_live_run(stores: Make, redis: Any) -> None:
    one, two = stores(), stores()
    run, script = await started(one, "r7")
    token = run.token
    assert await one.open_run(token) is run, "the running instance reads its own run"
    script.send(EVENTS[0], EVENTS[1])
    await until(lambda: run.stored_seq == 2, "stored")

    mirror = await two.open_run(token)
    assert mirror is not None and mirror is not run
    assert mirror.run_id == "r7" and mirror.token == token
    assert mirror.events == EVENTS[:2] and not mirror.ended
    assert two.mirrors == {token: mirror}
    assert await two.open_run(token) is mirror, "a second client there reads the same mirror"
    presence = await redis.zrange(key(token, "readers"), 0, -1, withscores=True)
    assert len(presence) == 1
    reader, expires = presence[0]
    assert reader.startswith(f"{two.instance}:")
    assert 25 < expires - time.time() <= 30, "present three leases (3 x 10 s) from now"
    assert 0 < await redis.ttl(key(token, "readers")) <= 3600
    assert await run.count_remote_readers() == 1, "counted by the running instance"  # type: ignore[misc]

    mirror.start()
    script.send(EVENTS[2], EVENTS[3], DONE)
    await until(lambda: mirror.ended, "the mirror ended with the run")
    assert mirror.events == [*EVENTS, DONE] and mirror.terminal_seq == 5
    await asyncio.wait_for(mirror.task, 10)  # type: ignore[arg-type]
    assert token not in two.mirrors, "an ended mirror is not kept"
    assert await redis.zscore(key(token, "readers"), reader) is None


async def test_presence_lasts_three_leases_or_two_reads(stores: Make, redis: Any) -> None:
    """A reader's presence outlives the time between two of its refreshes
    (one ``XREAD BLOCK``), however short the lease."""
    one, two = stores(lease_s=0.5), stores(lease_s=0.5)
    run, _ = await started(one)
    assert await two.open_run(run.token) is not None
    [(_, expires)] = await redis.zrange(key(run.token, "readers"), 0, -1, withscores=True)
    assert 1.8 < expires - time.time() <= 2 * BLOCK_MS / 1000 == 2.0


async def test_a_reader_that_leaves_stops_counting_at_once(stores: Make, redis: Any) -> None:
    one, two = stores(), stores()
    run, _ = await started(one)
    mirror = await two.open_run(run.token)
    assert mirror is not None
    reader = Reader(position=0)
    mirror.attach(reader)
    mirror.start()
    assert await run.count_remote_readers() == 1  # type: ignore[misc]
    await mirror.detach(reader)  # its client left: the mirror stops at once (it has no window of its own)
    assert await redis.zcard(key(run.token, "readers")) == 0, "its presence removed"
    assert await run.count_remote_readers() == 0  # type: ignore[misc]
    assert not run.ended, "the run itself goes on"


async def test_a_reader_arriving_as_the_last_one_leaves_gets_a_mirror_that_stays_shared(
    stores: Make, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client resuming here just as the last reader here leaves (its mirror
    cancelled, saying goodbye to Redis) gets a live mirror of its own, not
    the leaving one, which ends with ``cancelled`` though the run goes on."""
    await seeded(redis, "tok-turn", EVENTS[0])
    two = stores()
    leaving = await two.open_run("tok-turn")
    assert leaving is not None
    reader = Reader(position=0)
    leaving.attach(reader)
    before = await xreads(redis)
    leaving.start()
    await until(lambda: xreads_past(redis, before), "its reader tailing")
    client = two.client()
    zrem, in_goodbye, go_on = client.zrem, asyncio.Event(), asyncio.Event()

    async def slow_goodbye(*args: Any) -> Any:
        in_goodbye.set()
        await go_on.wait()
        return await zrem(*args)

    monkeypatch.setattr(client, "zrem", slow_goodbye)
    detached = asyncio.create_task(leaving.detach(reader))
    await asyncio.wait_for(in_goodbye.wait(), 10)
    arriving = await two.open_run("tok-turn")  # while the last reader there says goodbye
    assert arriving is not None and arriving is not leaving and not arriving.ended
    go_on.set()
    await detached
    assert two.mirrors == {"tok-turn": arriving}, "the leaving mirror's end does not drop the new one"
    assert await two.open_run("tok-turn") is arriving
    assert leaving.events[-1].code == "cancelled" and arriving.events == [EVENTS[0]]  # type: ignore[attr-defined]


async def test_a_finished_run_opens_whole_elsewhere_with_nothing_to_tail(stores: Make, redis: Any) -> None:
    one, two = stores(), stores()
    run, script = await started(one)
    script.send(EVENTS[0], DONE)
    await until(lambda: redis.hget(key(run.token, "meta"), "terminal"), "finished in Redis")
    mirror = await two.open_run(run.token, 1)
    assert mirror is not None and mirror.ended and mirror.terminal_seq == 2
    assert mirror.events == [EVENTS[0], DONE]
    assert two.mirrors == {} and not await redis.exists(key(run.token, "readers"))


async def test_an_unknown_run_is_none(stores: Make) -> None:
    assert await stores().open_run("A" * 22) is None


async def seeded(redis: Any, token: str, *events: StreamEvent, lease: bool = True) -> None:
    """Redis as a running instance (perhaps a dead one) left it."""
    await redis.hset(key(token, "meta"), mapping={"run_id": "r9", "instance": "dead"})
    for n, event in enumerate(events, 1):
        await redis.xadd(key(token, "events"), {"e": encode_event(event)}, id=f"0-{n}")
    if lease:
        await redis.set(key(token, "lease"), "dead", px=60_000)


async def seeded_at(url: str, token: str, *events: StreamEvent) -> None:
    """:func:`seeded`, on a Redis of the test's own (one it will stop)."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await seeded(client, token, *events)
    finally:
        await client.aclose()


async def test_a_run_whose_lease_lapsed_opens_ended_with_run_lost(stores: Make, redis: Any) -> None:
    await seeded(redis, "tok-lapsed", EVENTS[0], EVENTS[1], lease=False)
    mirror = await stores().open_run("tok-lapsed")
    assert mirror is not None and mirror.run_id == "r9"
    assert mirror.events == [EVENTS[0], EVENTS[1], run_lost()] and mirror.ended


async def test_a_tailed_run_whose_instance_stops_ends_with_run_lost(
    stores: Make, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await seeded(redis, "tok-dies", EVENTS[0])
    two = stores()
    mirror = await two.open_run("tok-dies")
    assert mirror is not None and not mirror.ended
    mirror.start()
    await redis.xadd(key("tok-dies", "events"), {"e": encode_event(EVENTS[1])}, id="0-2")
    await until(lambda: mirror.last_seq == 2, "the new event tailed")
    with caplog.at_level(logging.WARNING, logger="streaming.redislog"):
        await redis.delete(key("tok-dies", "lease"))  # the instance died: its lease lapses
        await until(lambda: mirror.ended, "the reader told")
    assert mirror.events == [EVENTS[0], EVENTS[1], run_lost()]
    assert any("run r9:" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert run_lost() == Error("run_lost", "The instance running this stream stopped before it finished.")


async def xreads(redis: Any) -> int:
    return (await redis.info("commandstats")).get("cmdstat_xread", {}).get("calls", 0)


async def xreads_past(redis: Any, count: int) -> bool:
    return await xreads(redis) > count


async def test_a_quiet_run_elsewhere_is_waited_for_one_blocking_read_at_a_time(stores: Make, redis: Any) -> None:
    """A run that is alive but writes nothing for a while (a slow tool, a
    thinking model): its reader here waits, says it is still there, and
    costs Redis one blocking read a second, not a busy loop."""
    await seeded(redis, "tok-quiet", EVENTS[0])
    mirror = await stores().open_run("tok-quiet")
    assert mirror is not None
    before = await xreads(redis)
    mirror.start()
    await asyncio.sleep(2.5)  # two and a half blocking reads with nothing new
    assert not mirror.ended and mirror.events == [EVENTS[0]], "not reported lost while its lease holds"
    assert await xreads(redis) - before <= 5
    [(_, expires)] = await redis.zrange(key("tok-quiet", "readers"), 0, -1, withscores=True)
    assert expires > time.time() + 20, "its presence renewed ahead, three leases from now"
    await redis.xadd(key("tok-quiet", "events"), {"e": encode_event(DONE)}, id="0-2")
    await until(lambda: mirror.ended, "the end read")
    assert mirror.events == [EVENTS[0], DONE]


async def test_a_run_that_ends_just_after_a_read_is_not_reported_lost(
    stores: Make, redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease is gone and ``XREAD`` returned nothing, but the run's last
    events landed just after it: they are read, not replaced by ``run_lost``."""
    await seeded(redis, "tok-race", EVENTS[0])
    two = stores()
    mirror = await two.open_run("tok-race")
    assert mirror is not None
    await redis.delete(key("tok-race", "lease"))  # the run finished: its lease is given up ...
    client = two.client()
    xread = client.xread

    async def read_then_finish(*args: Any, **kwargs: Any) -> Any:
        answer = await xread(*args, **kwargs)
        if not answer:  # ... and its last event lands right after this read
            await redis.xadd(key("tok-race", "events"), {"e": encode_event(DONE)}, id="0-2")
        return answer

    monkeypatch.setattr(client, "xread", read_then_finish)
    mirror.start()
    await until(lambda: mirror.ended, "the mirror ended")
    assert mirror.events == [EVENTS[0], DONE]


async def test_a_reader_elsewhere_losing_redis_ends_with_run_lost(
    stores: Make, own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    await seeded_at(own_server.url, "tok-gone", EVENTS[0])
    mirror = await stores(own_server.url).open_run("tok-gone")
    assert mirror is not None
    mirror.start()
    own_server.stop()
    with caplog.at_level(logging.ERROR):
        await until(lambda: mirror.ended, "the reader told", timeout=20)
        await asyncio.wait_for(mirror.task, 20)  # type: ignore[arg-type]
    assert mirror.events == [EVENTS[0], run_lost()]
    assert any("run r9:" in r.getMessage() and r.name == "streaming.redislog" for r in caplog.records)
    assert not [r for r in caplog.records if r.name == "streaming.runlog"], "leaving its presence behind is no failure"


async def test_redis_lost_while_a_reader_announces_itself_is_store_unavailable(
    stores: Make, own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seeded_at(own_server.url, "tok-cut", EVENTS[0])
    two = stores(own_server.url)
    redis = two.client()
    exists = redis.exists

    async def exists_then_stop(*args: Any) -> Any:
        answer = await exists(*args)
        own_server.stop()  # Redis goes away between reading the run and announcing the reader
        return answer

    monkeypatch.setattr(redis, "exists", exists_then_stop)
    with pytest.raises(StoreUnavailable, match=r"^ConnectionError"):
        await two.open_run("tok-cut")
    assert two.mirrors == {}


# ------------------------------------------------------------------------------ connection and auth


async def test_one_pool_per_store_with_timeouts_longer_than_a_blocking_read(stores: Make) -> None:
    store = stores("redis://127.0.0.1:1/0")
    client = store.client()
    assert store.client() is client
    options = client.connection_pool.connection_kwargs
    assert options["decode_responses"] is True
    assert options["socket_connect_timeout"] == CONNECT_TIMEOUT_S
    assert options["socket_timeout"] == SOCKET_TIMEOUT_S > BLOCK_MS / 1000, "a blocking XREAD is not a timeout"
    assert "credential_provider" not in options


async def test_with_entra_id_the_pool_is_replaced_every_half_hour(
    stores: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No connection outlives its token; the old pool is closed once its
    commands in flight are long done."""
    clock = [1000.0]
    monkeypatch.setattr(redislog, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    later: list[tuple[float, Callable[[], Any]]] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "call_later", lambda delay, callback: later.append((delay, callback)))
    store = stores("rediss://127.0.0.1:1")
    first = store.client()
    assert isinstance(first.connection_pool.connection_kwargs["credential_provider"], EntraIdCredentials)
    clock[0] += ENTRA_RECYCLE_S
    assert store.client() is first and later == []
    clock[0] += 0.5
    second = store.client()
    assert second is not first
    assert store.client() is second
    [(delay, close)] = later
    assert delay == ENTRA_RECYCLE_S == 30 * 60
    closed: list[bool] = []

    async def aclose() -> None:
        closed.append(True)

    monkeypatch.setattr(first, "aclose", aclose)
    await close()
    await asyncio.sleep(0)
    assert closed == [True]

    plain = stores("redis://127.0.0.1:1/0")
    kept = plain.client()
    clock[0] += 10 * ENTRA_RECYCLE_S
    assert plain.client() is kept, "without Entra ID the pool is kept"


@dataclass
class Credential:
    """Stands in for ``DefaultAzureCredential`` (no identity on this machine)."""

    token: str
    made: int = 0
    scopes: list[str] | None = None

    def __call__(self) -> Credential:
        self.made += 1
        self.scopes = []
        return self

    async def get_token(self, scope: str) -> Any:
        self.scopes.append(scope)  # type: ignore[union-attr]
        return SimpleNamespace(token=self.token)


def jwt(claims: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"h.{payload}.s"


async def test_entra_id_credentials_are_the_identitys_token_for_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity.aio

    token = jwt({"oid": "1234-oid"})
    credential = Credential(token)
    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", credential)
    provider = EntraIdCredentials()
    assert await provider.get_credentials_async() == ("1234-oid", token)
    assert await provider.get_credentials_async() == ("1234-oid", token)
    assert credential.made == 1, "one credential, whose tokens it caches and refreshes"
    assert credential.scopes == ["https://redis.azure.com/.default"] * 2
    assert await EntraIdCredentials("named-user").get_credentials_async() == ("named-user", token)
    with pytest.raises(NotImplementedError):
        provider.get_credentials()


def test_the_object_id_is_read_from_any_length_of_token() -> None:
    for oid in ("x", "xy", "xyz", "wxyz"):  # payloads of 15, 16, 18 and 19 characters: every padding
        payload = base64.urlsafe_b64encode(json.dumps({"oid": oid}, separators=(",", ":")).encode()).rstrip(b"=")
        assert _object_id(f"h.{payload.decode()}.s") == oid
    assert _object_id(jwt({"sub": "x"})) == ""


# ------------------------------------------------------------------------------ the events' JSON


def test_an_event_is_stored_as_compact_json_naming_its_class() -> None:
    """The format instances exchange (two versions of the app share a Redis
    during a deployment)."""
    assert encode_event(TextDelta("Zürich", "a")) == '{"t":"TextDelta","text":"Zürich","agent":"a"}'
    assert decode_event('{"t":"Error","code":"c","message":"m"}') == Error("c", "m")


def test_an_event_class_defined_in_a_function_travels_too() -> None:
    @dataclass(frozen=True)
    class Local(TextDelta):
        pass

    decoded = decode_event(encode_event(Local("t", "a")))
    assert decoded == Local("t", "a") and type(decoded) is Local


def test_a_class_a_slots_dataclass_replaced_is_not_taken_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``slots=True`` makes a new class; the one it replaced stays among the
    subclasses while anything holds it. The module's own is the one decoded."""
    module = ModuleType("events_elsewhere")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    replaced = type("Later", (TextDelta,), {"__module__": module.__name__})
    module.Later = dataclass(frozen=True, slots=True)(replaced)  # type: ignore[attr-defined]
    assert replaced in TextDelta.__subclasses__()
    assert _event_types()["Later"] is module.Later  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _NoteFromAnotherModule(TextDelta):
    """An event class deeper in the hierarchy, defined outside ``streaming.events``."""

    note: str = ""


def test_every_event_class_is_known_by_its_name_wherever_it_is_defined() -> None:
    types = _event_types()
    for cls in (AgentStarted, TextDelta, ToolCall, ToolResult, Done, Error):
        assert types[cls.__name__] is cls, "the class its module exports, not one a slots dataclass replaced"
    event = _NoteFromAnotherModule("t", "a", note="n")
    assert types["_NoteFromAnotherModule"] is _NoteFromAnotherModule
    decoded = decode_event(encode_event(event))
    assert decoded == event and type(decoded) is _NoteFromAnotherModule
