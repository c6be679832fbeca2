"""Holds every run to the event contract, whatever the runner does.

:func:`drive` runs a runner's events into a run log (``emit``) and
guarantees exactly one terminal event, last: ``done`` when the run
finishes, ``error`` when it raises or passes its deadline (the runner is
then cancelled, which closes the model call). Failures are logged with the
run id; clients see only a safe code and message.

The deadline is one ``asyncio.timeout`` around the whole run, not one per
event: ``drive`` is a coroutine, not a generator, so it never spans a
``yield``. No anyio cancel scope is on this path: each one cost more than
the await it guarded (see :mod:`streaming.shield`). :func:`guard` gives
the same guarantees as an async iterator, for in-process consumers (tests,
benchmarks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

from streaming.errors import classify
from streaming.events import Done, Error, StreamEvent, TextDelta
from streaming.logsafe import one_line
from streaming.runlog import CLOSE_TIMEOUT_S, Emit, Run
from streaming.shield import finish
from telemetry import NOOP, RunObserver

logger = logging.getLogger(__name__)


async def drive(
    events: AsyncIterator[StreamEvent],
    emit: Emit,
    *,
    deadline_s: float,
    run_id: str,
    observer: RunObserver = NOOP,
) -> None:
    """Emit ``events`` up to the first terminal one; turn an exception or
    the deadline into an ``error`` event. Exactly one terminal event is
    emitted unless the caller cancels the run. ``observer`` (telemetry)
    hears of the run's start, its first text and its end: per run, not per
    event."""
    started = time.monotonic()
    iterator = aiter(events)
    terminal: StreamEvent | None = None
    awaiting_text = True
    observer.begin()
    try:
        async with asyncio.timeout(deadline_s):
            try:
                async for event in iterator:
                    if isinstance(event, Done):
                        elapsed_ms = int((time.monotonic() - started) * 1000)
                        terminal = dataclasses.replace(event, elapsed_ms=elapsed_ms)
                        emit(terminal)
                        logger.info("run %s done in %d ms, usage %s", run_id, elapsed_ms, event.usage)
                        return
                    if awaiting_text and isinstance(event, TextDelta):
                        awaiting_text = False
                        observer.first_text()
                    emit(event)
                    if event.terminal:  # an error the runner reported itself (a content filter)
                        terminal = event
                        logger.warning("run %s ended: %s", run_id, getattr(event, "code", type(event).__name__))
                        return
            except Exception as exc:
                info = classify(exc)
                if info.code == "internal_error":
                    logger.exception("run %s failed: %s", run_id, info.code)
                else:  # an expected failure upstream: no traceback, just what and why
                    logger.warning("run %s failed: %s (%s: %s)", run_id, info.code, type(exc).__name__, one_line(exc))
                terminal = Error(info.code, info.message)
                emit(terminal)
                return
        logger.error("run %s ended without a terminal event", run_id)
        terminal = Error("internal_error", "The run ended unexpectedly.")
        emit(terminal)
    except TimeoutError:  # the deadline: the runner's own errors are handled above
        logger.warning("run %s passed its %g s deadline", run_id, deadline_s)
        terminal = Error("timeout", f"The run did not finish within {deadline_s:g} seconds.")
        emit(terminal)
    finally:
        # Closes the runner if it is still going (deadline, cancel): its own
        # finally closes the framework stream.
        try:
            await finish(iterator.aclose(), CLOSE_TIMEOUT_S)  # type: ignore[attr-defined]
        finally:
            observer.end(terminal)


async def guard(events: AsyncIterator[StreamEvent], *, deadline_s: float, run_id: str) -> AsyncIterator[StreamEvent]:
    """:func:`drive` as an async iterator: the run is its own task writing
    to a run log, read here. Leaving early (or being cancelled) cancels the
    run and waits, bounded, for it to close."""
    run = Run(run_id=run_id)
    run.producer = lambda emit: drive(events, emit, deadline_s=deadline_s, run_id=run_id)
    run.start()
    position = 0
    try:
        while True:
            pending = run.events[position - run.base :]
            position += len(pending)
            for event in pending:
                yield event
            if run.ended and position >= run.last_seq:
                return
            if position >= run.last_seq:
                waiter = asyncio.get_running_loop().create_future()
                run.subscribe(waiter)
                await waiter
    finally:
        await finish(run.cancel(), 2 * CLOSE_TIMEOUT_S)
