"""streaming.shield.finish: an await that a cancellation does not cut short,
bounded in time (what a run's end relies on to close its model call)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from streaming.shield import finish


async def test_it_returns_what_the_awaitable_returns() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await finish(answer(), 1) == 42


async def test_its_exception_is_raised_as_is() -> None:
    async def broken() -> None:
        await asyncio.sleep(0)
        raise ValueError("closing failed")

    with pytest.raises(ValueError, match="closing failed"):
        await finish(broken(), 1)


async def test_a_cancellation_waits_for_the_awaitable_then_is_raised() -> None:
    closed = asyncio.Event()

    async def close() -> None:
        await asyncio.sleep(0.05)
        closed.set()

    task = asyncio.create_task(finish(close(), 5))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # a second one neither
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set(), "the close ran to its end before the cancellation went on"


async def test_past_its_time_the_awaitable_is_cancelled_and_nothing_returned() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await finish(hangs(), 0.05) is None
    assert 0.04 <= loop.time() - started < 1
    await asyncio.wait_for(cancelled.wait(), 1)


async def test_cancelled_while_the_awaitable_fails_raises_the_cancellation_and_logs_nothing(caplog) -> None:
    async def broken() -> None:
        await asyncio.sleep(0.02)
        raise ValueError("closing failed")

    async def cancelled() -> bool:
        task = asyncio.create_task(finish(broken(), 5))
        await asyncio.sleep(0.005)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        assert await cancelled()
        await asyncio.sleep(0.05)
        gc.collect()  # an unseen exception is reported when its task is collected
    assert "never retrieved" not in caplog.text


async def test_cancelled_while_the_awaitable_hangs_past_its_time_the_cancellation_still_goes_on() -> None:
    """A close that never ends is given up at its time; the caller's own
    cancellation (a client leaving, a deadline) is not lost with it."""
    gave_up = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            gave_up.set()
            raise

    task = asyncio.create_task(finish(hangs(), 0.1))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    await asyncio.wait_for(gave_up.wait(), 1)
