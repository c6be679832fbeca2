"""Finishing an await while being cancelled, with asyncio alone.

A run's end has to close things (the framework stream, the runner, the
run itself) even when the task doing it is being cancelled: a client
leaving, a deadline. anyio's ``move_on_after(t, shield=True)`` does that
with a cancel scope, but each scope costs more than the whole await it
guards (two scopes per run were about 70 µs, and scopes were most of the
response's own per-run cost). :func:`finish` gives the same guarantee with
one task and no scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def finish(awaitable: Awaitable[T], timeout_s: float) -> T | None:
    """Await ``awaitable`` to its end, in a task of its own, for at most
    ``timeout_s`` seconds (then it is cancelled and ``None`` returned).

    Cancelling the caller meanwhile does not interrupt it: the cancellation
    is raised once the awaitable is over. Its own exception is raised as is.
    """
    task = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    cancelled = False
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            task.cancel()
            break
        try:
            await asyncio.wait((task,), timeout=remaining)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if task.done() and not task.cancelled():
            task.exception()  # seen: not logged as "never retrieved"; the cancellation wins
        raise asyncio.CancelledError
    if not task.done() or task.cancelled():
        return None
    return task.result()
