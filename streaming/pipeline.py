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
from collections.abc import AsyncIterator, Callable

import anyio

from streaming.errors import classify
from streaming.events import Done, Error, StreamEvent
from streaming.logsafe import one_line

logger = logging.getLogger(__name__)


async def guard(
    events: AsyncIterator[StreamEvent],
    *,
    deadline_s: float,
    run_id: str,
    on_end: Callable[[], object] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Yield ``events`` up to the first terminal one, then stop; turn an
    exception or the deadline into an ``error`` event. ``on_end`` runs once
    the run is over and closed (it gives back the run's slot)."""
    started = time.monotonic()
    deadline = started + deadline_s
    iterator = aiter(events)
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
                        logger.warning(
                            "run %s failed: %s (%s: %s)", run_id, info.code, type(exc).__name__, one_line(exc)
                        )
                    yield Error(info.code, info.message)
                    return
            if scope.cancelled_caught:
                logger.warning("run %s passed its %.0f s deadline", run_id, deadline_s)
                yield Error("timeout", f"The run did not finish within {deadline_s:g} seconds.")
                return
            if event is None:
                logger.error("run %s ended without a terminal event", run_id)
                yield Error("internal_error", "The run ended unexpectedly.")
                return
            if isinstance(event, Done):
                elapsed_ms = int((time.monotonic() - started) * 1000)
                yield dataclasses.replace(event, elapsed_ms=elapsed_ms)
                logger.info("run %s done in %d ms, usage %s", run_id, elapsed_ms, event.usage)
                return
            yield event
            if event.terminal:
                return
    finally:
        # Cancels the runner if it is still going (deadline, disconnect):
        # its own finally closes the framework stream.
        try:
            with anyio.move_on_after(2.0, shield=True):
                await iterator.aclose()  # type: ignore[attr-defined]
        finally:
            if on_end is not None:
                on_end()
