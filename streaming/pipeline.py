"""Holds every run to the event contract, whatever the runner does.

:func:`guard` wraps a runner's events and guarantees exactly one terminal
event, last: ``done`` when the run finishes, ``error`` when it raises or
passes its deadline (the run is then cancelled, which closes the model
call). Failures are logged with the run id; clients see only a safe code
and message.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import anyio

from streaming.errors import classify
from streaming.events import Done, Error, StreamEvent, TextDelta
from telemetry import NOOP, RunObserver

logger = logging.getLogger(__name__)


async def guard(
    events: AsyncIterator[StreamEvent],
    *,
    deadline_s: float,
    run_id: str,
    observer: RunObserver = NOOP,
) -> AsyncIterator[StreamEvent]:
    """Yield ``events`` up to the first terminal one, then stop; turn an
    exception or the deadline into an ``error`` event. ``observer`` hears
    of the run's start, first text and end (telemetry; per run, not per event)."""
    started = time.monotonic()
    deadline = started + deadline_s
    iterator = aiter(events)
    terminal: StreamEvent | None = None
    awaiting_text = True
    observer.begin()
    try:
        while True:
            # The cancel scope covers one step only: never yield inside it.
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as scope:
                try:
                    event = await anext(iterator)
                except StopAsyncIteration:
                    event = None
                except Exception as exc:
                    info = classify(exc)
                    if info.code == "internal_error":
                        logger.exception("run %s failed: %s", run_id, info.code)
                    else:  # an expected failure upstream: no traceback, just what and why
                        logger.warning("run %s failed: %s (%s: %.300s)", run_id, info.code, type(exc).__name__, exc)
                    terminal = Error(info.code, info.message)
                    yield terminal
                    return
            if scope.cancelled_caught:
                logger.warning("run %s passed its %.0f s deadline", run_id, deadline_s)
                terminal = Error("timeout", f"The run did not finish within {deadline_s:g} seconds.")
                yield terminal
                return
            if event is None:
                logger.error("run %s ended without a terminal event", run_id)
                terminal = Error("internal_error", "The run ended unexpectedly.")
                yield terminal
                return
            if isinstance(event, Done):
                elapsed_ms = int((time.monotonic() - started) * 1000)
                terminal = dataclasses.replace(event, elapsed_ms=elapsed_ms)
                yield terminal
                logger.info("run %s done in %d ms, usage %s", run_id, elapsed_ms, event.usage)
                return
            if awaiting_text and isinstance(event, TextDelta):
                awaiting_text = False
                observer.first_text()
            if event.terminal:
                terminal = event
            yield event
            if terminal is not None:
                return
    finally:
        # Cancels the runner if it is still going (deadline, disconnect):
        # its own finally closes the framework stream.
        try:
            with anyio.move_on_after(2.0, shield=True):
                await iterator.aclose()  # type: ignore[attr-defined]
        finally:
            observer.end(terminal)
