"""The one HTTP handler both stream triggers share.

request -> validated :class:`RunRequest` -> runner -> :func:`guard` ->
encoder chosen from ``Accept`` -> :class:`EventStreamResponse`.
Bad input answers 4xx JSON; a missing model configuration answers 503
JSON before any byte of a stream is sent.
"""

from __future__ import annotations

import logging
import re
import uuid

from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

import llm
from settings import SettingsError, stream_settings
from streaming.encoders import choose_encoder
from streaming.pipeline import guard
from streaming.request import RequestError, parse_body, parse_query, read_body
from streaming.response import EventStreamResponse
from streaming.runners import Runner

logger = logging.getLogger(__name__)


# The Functions host passes each invocation's id to the worker's HTTP server
# in this header (the local host does the same); logs then match the
# invocation in Application Insights.
INVOCATION_HEADER = "x-ms-invocation-id"
_SAFE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def run_id_of(req: Request) -> str:
    invocation = req.headers.get(INVOCATION_HEADER, "")
    return invocation if _SAFE_ID.fullmatch(invocation) else uuid.uuid4().hex


def error_response(status: int, code: str, message: str, run_id: str | None = None) -> Response:
    """A JSON error; with the run id (``X-Run-Id``) when the log has a line about it."""
    headers = {"X-Run-Id": run_id} if run_id else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def stream_run(req: Request, runner: Runner) -> Response:
    """Validate ``req``, then stream ``runner``'s events. Whatever fails
    before the stream starts is a JSON error, never a stack trace."""
    run_id = run_id_of(req)
    try:
        return await _stream_run(req, runner, run_id)
    except Exception:
        logger.exception("run %s: %s %s failed before streaming", run_id, req.method, req.url.path)
        return error_response(500, "internal_error", "The request failed unexpectedly.", run_id)


async def _stream_run(req: Request, runner: Runner, run_id: str) -> Response:
    if req.method == "GET" and "last-event-id" in req.headers:
        # A browser's EventSource reconnecting after a stream ended. Runs are
        # stateless and not resumable: 204 tells it to stop for good instead
        # of running (and paying for) the agent again.
        return Response(status_code=204)
    try:
        limits = stream_settings()
        if req.method == "GET":
            run_request = parse_query(req.query_params, limits)
        else:
            body = await read_body(req.stream(), req.headers.get("content-length"), limits)
            run_request = parse_body(body, req.headers.get("content-type"), limits)
        client, model = llm.chat_client()
    except RequestError as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    except SettingsError as exc:
        logger.error("run %s refused: %s", run_id, exc)
        return error_response(503, exc.code, str(exc), run_id)
    logger.info(
        "run %s: %s %s via %s (%d earlier turns)",
        run_id,
        req.method,
        req.url.path,
        model.provider,
        len(run_request.history),
    )
    events = guard(runner(run_request, client, model), deadline_s=limits.deadline_s, run_id=run_id)
    return EventStreamResponse(
        events,
        encoder=choose_encoder(req.headers.get("accept")),
        heartbeat_s=limits.heartbeat_s,
        send_timeout_s=limits.send_timeout_s,
        run_id=run_id,
        headers={"X-Run-Id": run_id},
    )
