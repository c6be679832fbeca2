"""The one HTTP handler both stream triggers share.

request -> validated :class:`RunRequest` -> runner -> :func:`guard` ->
encoder chosen from ``Accept`` -> :class:`EventStreamResponse`.
Bad input answers 4xx JSON; a missing model configuration answers 503
JSON before any byte of a stream is sent. Only GET and POST start a run;
past ``MAX_CONCURRENT_RUNS`` a request gets 429 before any model call.
"""

from __future__ import annotations

import logging
import re
import uuid

from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

import llm
from settings import SettingsError, run_limits, stream_settings
from streaming.encoders import choose_encoder
from streaming.logsafe import one_line
from streaming.pipeline import guard
from streaming.request import ClientGone, RequestError, parse_body, parse_query, read_body
from streaming.response import EventStreamResponse
from streaming.runners import Runner
from streaming.slots import RunSlots

logger = logging.getLogger(__name__)


# The Functions host passes each invocation's id to the worker's HTTP server
# in this header (the local host does the same); logs then match the
# invocation in Application Insights.
INVOCATION_HEADER = "x-ms-invocation-id"
_SAFE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")

RUN_METHODS = ("GET", "POST")
#: Seconds a client refused with 429 is asked to wait: runs last seconds
#: to minutes, so an immediate retry would most likely be refused again.
RETRY_AFTER_S = 5
#: The runs this worker process holds now (one event loop per process).
RUN_SLOTS = RunSlots()


def run_id_of(req: Request) -> str:
    invocation = req.headers.get(INVOCATION_HEADER, "")
    return invocation if _SAFE_ID.fullmatch(invocation) else uuid.uuid4().hex


def error_response(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def stream_run(req: Request, runner: Runner) -> Response:
    """Validate ``req``, then stream ``runner``'s events. Whatever fails
    before the stream starts is a JSON error, never a stack trace."""
    run_id = run_id_of(req)
    try:
        return await _stream_run(req, runner, run_id)
    except ClientGone:
        logger.info("run %s: the client left before sending its whole body", run_id)
        return Response(status_code=400)  # nobody reads it; the server just closes the connection
    except Exception:
        logger.exception("run %s: %s %s failed before streaming", run_id, req.method, one_line(req.url.path))
        response = error_response(500, "internal_error", "The request failed unexpectedly.")
        response.headers["X-Run-Id"] = run_id
        return response


async def _stream_run(req: Request, runner: Runner, run_id: str) -> Response:
    if req.method not in RUN_METHODS:
        # HEAD would otherwise run (and pay for) the whole agent to send
        # nothing; the local host maps HEAD to GET routes.
        response = error_response(405, "method_not_allowed", "Use GET (EventSource) or POST to start a run.")
        response.headers["Allow"] = ", ".join(RUN_METHODS)
        return response
    if req.method == "GET" and "last-event-id" in req.headers:
        # A browser's EventSource reconnecting after a stream ended. Runs are
        # stateless and not resumable: 204 tells it to stop for good instead
        # of running (and paying for) the agent again.
        return Response(status_code=204)
    try:
        limits = stream_settings()
        caps = run_limits()
        if req.method == "GET":
            run_request = parse_query(req.query_params, limits)
        else:
            body = await read_body(
                req.stream(), req.headers.get("content-length"), limits, timeout_s=caps.body_read_timeout_s
            )
            run_request = parse_body(body, req.headers.get("content-type"), limits)
        client, model = llm.chat_client()
    except RequestError as exc:
        # Past the body deadline the connection is closed: the rest of a
        # trickled body must not keep holding it.
        headers = {"Connection": "close"} if exc.status == 408 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
    except SettingsError as exc:
        logger.error("run %s refused: %s", run_id, exc)
        return error_response(503, exc.code, str(exc))
    slot = RUN_SLOTS.try_acquire(caps.max_concurrent_runs)
    if slot is None:
        # INFO, not WARNING: a flood of refused requests must not flood alerts.
        logger.info("run %s refused: %d runs already in progress", run_id, caps.max_concurrent_runs)
        response = error_response(
            429, "too_many_runs", "This instance is running as many streams as it allows. Try again shortly."
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    logger.info(
        "run %s: %s %s via %s (%d earlier turns)",
        run_id,
        req.method,
        req.url.path,
        model.provider,
        len(run_request.history),
    )
    try:
        # The run holds its slot and gives it back when it ends, however it
        # ends (the guard's finally); not when a response ends.
        events = guard(
            runner(run_request, client, model), deadline_s=limits.deadline_s, run_id=run_id, on_end=slot.release
        )
        return EventStreamResponse(
            events,
            encoder=choose_encoder(req.headers.get("accept")),
            heartbeat_s=limits.heartbeat_s,
            send_timeout_s=limits.send_timeout_s,
            run_id=run_id,
            headers={"X-Run-Id": run_id},
        )
    except BaseException:
        slot.release()
        raise
